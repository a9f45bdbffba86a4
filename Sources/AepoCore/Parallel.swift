import Glibc

/// Runs `body` over `count` items split into `threads` contiguous ranges, one plain pthread
/// per range beyond the first (the calling thread takes the first range), and joins them
/// all before returning.
///
/// The split depends only on `count` and `threads`, and every range is processed by one
/// thread in order, so a kernel whose per-item work does not depend on the split produces
/// bit-identical results for every thread count. Reductions must therefore be formed per
/// item (or per fixed-size block) and combined afterwards in item order, never per range.
///
/// If a thread cannot be created the range runs on the calling thread instead: the call
/// degrades to fewer threads, it never fails.
public func parallelRanges(count: Int, threads: Int, minPerThread: Int = 1,
                           _ body: (Range<Int>) -> Void) {
    let maxUseful = minPerThread > 0 ? max(1, count / max(minPerThread, 1)) : count
    let t = max(1, min(threads, count, maxUseful))
    if t <= 1 || count <= 1 {
        if count > 0 { body(0..<count) }
        return
    }
    withoutActuallyEscaping(body) { escaping in
        let job = ParallelJob(body: escaping, count: count, parts: t)
        var tids = [pthread_t?](repeating: nil, count: t)
        var contexts = [Unmanaged<ParallelSlot>?](repeating: nil, count: t)
        for p in 1..<t {
            let slot = Unmanaged.passRetained(ParallelSlot(job: job, part: p))
            var tid = pthread_t()
            let rc = pthread_create(&tid, nil, { raw in
                let slot = Unmanaged<ParallelSlot>.fromOpaque(raw!).takeUnretainedValue()
                slot.job.run(slot.part)
                return nil
            }, slot.toOpaque())
            if rc == 0 {
                tids[p] = tid
                contexts[p] = slot
            } else {
                slot.release()
            }
        }
        job.run(0)
        for p in 1..<t {
            if let tid = tids[p] {
                pthread_join(tid, nil)
                contexts[p]?.release()
            } else {
                job.run(p)
            }
        }
    }
}

/// The range of part `part` when `count` items are split into `parts` contiguous ranges.
@inline(__always)
public func partRange(count: Int, parts: Int, part: Int) -> Range<Int> {
    let base = count / parts, extra = count % parts
    let lo = part * base + min(part, extra)
    let hi = lo + base + (part < extra ? 1 : 0)
    return lo..<hi
}

final class ParallelJob: @unchecked Sendable {
    let body: (Range<Int>) -> Void
    let count: Int
    let parts: Int
    init(body: @escaping (Range<Int>) -> Void, count: Int, parts: Int) {
        self.body = body
        self.count = count
        self.parts = parts
    }
    func run(_ part: Int) {
        let r = partRange(count: count, parts: parts, part: part)
        if !r.isEmpty { body(r) }
    }
}

final class ParallelSlot: @unchecked Sendable {
    let job: ParallelJob
    let part: Int
    init(job: ParallelJob, part: Int) {
        self.job = job
        self.part = part
    }
}
