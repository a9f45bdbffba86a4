import AepoCore
import Glibc

/// The mutex of a handle whose calls change it (a controller's state, a sampler's scratch).
///
/// A handle belongs to one thread at a time, but a trainer that shares one by mistake must
/// not corrupt it or crash: every call that reads or writes such a handle's mutable state
/// holds its lock, so calls on one shared handle run one after the other, each seeing the
/// handle as the previous one left it. Uncontended, the lock costs two atomic operations
/// per call. Loss and fused-head handles are never written after creation and need none.
final class HandleLock {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deinitialize(count: 1)
        mutex.deallocate()
    }

    @inline(__always)
    func run<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}
