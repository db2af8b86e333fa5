#include "pt_rlimit.h"
#include "pt_log.h"

#include <errno.h>
#include <string.h>
#include <sys/resource.h>

long pt_rlimit_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        pt_log_warn("cannot read the open-file limit: %s", strerror(errno));
        return -1;
    }
    if (rl.rlim_cur >= rl.rlim_max) {
        pt_log_info("open-file limit: %llu (the hard limit)", (unsigned long long)rl.rlim_cur);
        return (long)rl.rlim_cur;
    }
    rlim_t was = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        pt_log_warn("cannot raise the open-file limit from %llu to %llu: %s",
                    (unsigned long long)was, (unsigned long long)rl.rlim_max, strerror(errno));
        return (long)was;
    }
    pt_log_info("open-file limit raised from %llu to %llu (the hard limit)",
                (unsigned long long)was, (unsigned long long)rl.rlim_max);
    return (long)rl.rlim_cur;
}
