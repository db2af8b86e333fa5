#include "pt_notify.h"

#include <systemd/sd-daemon.h>

#include <stdio.h>
#include <time.h>

void pt_notify_ready(const char *status)
{
    sd_notifyf(0, "READY=1\nSTATUS=%s", status ? status : "serving");
}

void pt_notify_reloading(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu",
               (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
}

void pt_notify_stopping(void)
{
    sd_notify(0, "STOPPING=1");
}
