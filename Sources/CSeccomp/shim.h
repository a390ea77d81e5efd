/* libseccomp for the Sandbox target. Function-like macros (SCMP_ACT_ERRNO, SCMP_SYS, SCMP_A0)
 * and the variadic seccomp_rule_add do not import into Swift: Sandbox computes the action
 * constants itself, resolves names with seccomp_syscall_resolve_name and uses
 * seccomp_rule_add_array. */
#include <seccomp.h>
