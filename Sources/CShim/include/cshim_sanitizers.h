#ifndef CSHIM_SANITIZERS_H
#define CSHIM_SANITIZERS_H

/// 1 in a build instrumented by AddressSanitizer or ThreadSanitizer (scripts/sanitize.sh), else 0:
/// the seccomp policies then allow the few calls the sanitizer's runtime makes.
int cshim_sanitizer_build(void);

#endif
