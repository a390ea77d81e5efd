#define _GNU_SOURCE
#include "cshim_sandbox.h"

#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int cshim_effective_capabilities(unsigned long long *out) {
    struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
    memset(data, 0, sizeof(data));
    if (syscall(SYS_capget, &header, data) != 0) {
        return -1;
    }
    *out = ((unsigned long long)data[1].effective << 32) | data[0].effective;
    return 0;
}

int cshim_clear_capabilities(void) {
    struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
    memset(data, 0, sizeof(data));
    return (int)syscall(SYS_capset, &header, data);
}

int cshim_drop_all_capabilities(void) {
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) {
        return -1;
    }
    unsigned long long effective = 0;
    if (cshim_effective_capabilities(&effective) != 0) {
        return -1;
    }
    if (effective & (1ULL << CAP_SETPCAP)) {
        /* Every capability the kernel knows, CAP_SETPCAP (which the drop needs) last. */
        for (int cap = 0; cap < 64; cap++) {
            if (cap == CAP_SETPCAP) continue;
            if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
                if (errno == EINVAL) break; /* past the kernel's last capability */
                return -1;
            }
        }
        if (prctl(PR_CAPBSET_DROP, CAP_SETPCAP, 0, 0, 0) != 0) {
            return -1;
        }
    }
    return cshim_clear_capabilities();
}

int cshim_setgroups_none(void) {
    return setgroups(0, NULL);
}

int cshim_prepare_capability_drop(void) {
    uid_t real, effective, saved;
    if (getresuid(&real, &effective, &saved) != 0) {
        return -1;
    }
    if (real == 0 || effective == 0 || saved == 0) {
        return 0;
    }
    return setresuid((uid_t)-1, (uid_t)-1, 0);
}

long cshim_syscall6(long number, long a0, long a1, long a2, long a3, long a4, long a5) {
    return syscall(number, a0, a1, a2, a3, a4, a5);
}

long cshim_foreign_abi_getpid(int abi) {
#if defined(__x86_64__)
    long result;
    if (abi == 0) {
        /* i386: int 0x80, getpid is 20 there. */
        __asm__ volatile("int $0x80" : "=a"(result) : "a"(20L) : "memory");
    } else {
        /* x32: the x86_64 syscall instruction with __X32_SYSCALL_BIT; getpid is 39. */
        __asm__ volatile("syscall" : "=a"(result) : "a"(0x40000000L | 39L) : "rcx", "r11", "memory");
    }
    if (result < 0 && result > -4096) {
        errno = (int)-result;
        return -1;
    }
    return result;
#else
    (void)abi;
    errno = ENOSYS;
    return -2;
#endif
}

static const char *const *sigsys_names;
static int sigsys_count;

static void sigsys_write(const char *text, size_t length) {
    while (length > 0) {
        ssize_t n = write(2, text, length);
        if (n <= 0) {
            return;
        }
        text += n;
        length -= (size_t)n;
    }
}

static void sigsys_handler(int signal, siginfo_t *info, void *context) {
    (void)signal;
    (void)context;
    int number = info->si_syscall;
    char line[160];
    size_t used = 0;
    const char *prefix = "peerjs: sandbox: forbidden system call ";
    for (const char *p = prefix; *p && used < sizeof(line) - 1; p++) line[used++] = *p;
    char digits[16];
    int count = 0;
    unsigned int value = number < 0 ? 0u : (unsigned int)number;
    do {
        digits[count++] = (char)('0' + value % 10);
        value /= 10;
    } while (value > 0 && count < (int)sizeof(digits));
    while (count > 0 && used < sizeof(line) - 1) line[used++] = digits[--count];
    const char *name = (number >= 0 && number < sigsys_count && sigsys_names) ? sigsys_names[number] : NULL;
    if (name) {
        if (used < sizeof(line) - 2) { line[used++] = ' '; line[used++] = '('; }
        for (const char *p = name; *p && used < sizeof(line) - 2; p++) line[used++] = *p;
        line[used++] = ')';
    }
    line[used++] = '\n';
    sigsys_write(line, used);
    /* SIGSYS is blocked while this handler runs: a second trapped call makes the kernel reset
     * SIGSYS to its default action and deliver it, so the process dies of SIGSYS exactly as
     * under KILL_PROCESS. The same call number traps again; if it somehow does not, exit. */
    syscall(number, 0, 0, 0, 0, 0, 0);
    _exit(128 + SIGSYS);
}

int cshim_install_sigsys_reporter(const char *const *names, int count) {
    sigsys_names = names;
    sigsys_count = count;
    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_sigaction = sigsys_handler;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    return sigaction(SIGSYS, &action, NULL);
}
