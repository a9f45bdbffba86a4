import COpenBLAS

/// Every call into BLAS made by libaepo, in one place: three row-major single-precision
/// products with the shapes the fused LM head needs.
///
/// Threading: these calls run on OpenBLAS's own thread pool, whose size belongs to the host
/// process (`OPENBLAS_NUM_THREADS`, or `openblas_set_num_threads` called by the host).
/// libaepo never changes it. OpenBLAS splits a product over output rows and columns, never
/// over the inner dimension, so in practice each output element is summed in the same order
/// for every BLAS thread count; OpenBLAS does not promise this, which is why the library's
/// bit-identity guarantee covers its own `threads` setting and not the BLAS thread count.
///
/// Preconditions (established by the callers' validation, see `FusedShape`): every size is
/// in 1...Int32.max, every leading dimension is in 1...Int32.max and at least the row
/// length it describes, and no output overlaps an input. Sizes are converted with
/// `truncatingIfNeeded` so that nothing here can trap.
enum Gemm {
    /// Largest size or leading dimension BLAS accepts (its integers are 32-bit).
    static let maxDimension = Int(Int32.max)

    @inline(__always)
    static func i32(_ v: Int) -> Int32 {
        assert(v >= 0 && v <= maxDimension)
        return Int32(truncatingIfNeeded: v)
    }

    /// C[m, n] = A[m, k] · B[n, k]ᵀ + beta · C.
    ///
    /// The logits product: A = rows of X, B = rows of W, C = a logits block.
    static func abT(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int,
                    b: UnsafePointer<Float>, ldb: Int, beta: Float,
                    c: UnsafeMutablePointer<Float>, ldc: Int) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, i32(m), i32(n), i32(k),
                    1, a, i32(lda), b, i32(ldb), beta, c, i32(ldc))
    }

    /// C[m, n] = A[m, k] · B[k, n] + beta · C.
    ///
    /// The input gradient: A = a logits-gradient block, B = rows of W, C = rows of dX.
    static func ab(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int,
                   b: UnsafePointer<Float>, ldb: Int, beta: Float,
                   c: UnsafeMutablePointer<Float>, ldc: Int) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, i32(m), i32(n), i32(k),
                    1, a, i32(lda), b, i32(ldb), beta, c, i32(ldc))
    }

    /// C[m, n] = A[k, m]ᵀ · B[k, n] + beta · C.
    ///
    /// The weight gradient: A = a logits-gradient block, B = rows of X, C = rows of dW.
    static func aTb(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int,
                    b: UnsafePointer<Float>, ldb: Int, beta: Float,
                    c: UnsafeMutablePointer<Float>, ldc: Int) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, i32(m), i32(n), i32(k),
                    1, a, i32(lda), b, i32(ldb), beta, c, i32(ldc))
    }
}
