import CShim

extension SeccompPolicy {
    /// The calls an AddressSanitizer or ThreadSanitizer runtime makes in every thread, allowed
    /// only in an instrumented build (scripts/sanitize.sh), so the tests can run the real roles
    /// under their filters instrumented. Empty in every other build: a release or debug filter
    /// never contains these lines.
    static let sanitizerRuntime: [(String, SeccompAction, why: String)] =
        cshim_sanitizer_build() == 0 ? [] : [
            ("sigaltstack", .allow, why: "sanitizer runtime: each thread's alternate signal stack (stack-overflow reports)"),
            ("sched_getaffinity", .allow, why: "sanitizer runtime: counts CPUs when a thread starts"),
        ]
}
