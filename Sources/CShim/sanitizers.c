// What an instrumented build (scripts/sanitize.sh) needs to know about itself; in a normal build
// cshim_sanitizer_build() is 0 and nothing else is compiled.
#include "cshim_sanitizers.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define CSHIM_SANITIZED 1
#endif
#endif

#ifdef CSHIM_SANITIZED
int cshim_sanitizer_build(void) { return 1; }
#else
int cshim_sanitizer_build(void) { return 0; }
#endif

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
// The supervisor gives its children a minimal environment, so ASAN_OPTIONS set for a test run
// does not reach the broker or the auth helper: their defaults are set here instead. Leak
// checking is off because LeakSanitizer stops the world with ptrace at exit, which the
// children's seccomp filters refuse; halt_on_error makes the first report end the process.
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
    return "detect_leaks=0:halt_on_error=1";
}
#endif
#endif
