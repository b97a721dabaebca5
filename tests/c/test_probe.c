/* probe.c from plain C: no Python, fake text only.  Built and run by
 * tests/test_probe_c.py; prints "N passed, N failed". */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "memtamer/probe.h"
#include "memtamer/worker.h"

#include "check.h"

int
main(void)
{
    long long v = 0;
    /* Threads for the load: the idle cores and the caller's own. */
    CHECK(mt_worker_threads_for_load(2, 0.0) == 2);
    CHECK(mt_worker_threads_for_load(2, 1.0) == 2); /* the caller alone */
    CHECK(mt_worker_threads_for_load(2, 2.0) == 1);
    CHECK(mt_worker_threads_for_load(2, 11.6) == 1);
    CHECK(mt_worker_threads_for_load(8, 3.4) == 6);
    CHECK(mt_worker_threads_for_load(1, 0.0) == 1);
    CHECK(mt_worker_threads_for_load(4, -1.0) == 4);
    int idle = mt_worker_idle_cores(8);
    CHECK(idle >= 1 && idle <= mt_worker_cores(8));
    CHECK(mt_probe_parse_kb_field("VmHWM:\t 2048 kB\nVmRSS:\t 1024 kB\n", "VmRSS", &v) == 0 &&
          v == 1024 * 1024);
    CHECK(mt_probe_parse_kb_field("VmRSS:\t 1024 kB\n", "VmHWM", &v) == -1);
    CHECK(mt_probe_parse_statm("10 3 1 0 0 0 0", 4096, &v) == 0 && v == 3 * 4096);
    CHECK(mt_probe_parse_statm("10", 4096, &v) == -1);
    CHECK(mt_probe_parse_statm("10 x 1", 4096, &v) == -1);
    /* Figures past long long saturate rather than wrap. */
    CHECK(mt_probe_parse_kb_field("VmRSS: 99999999999999999999999 kB\n", "VmRSS", &v) == 0 &&
          v == LLONG_MAX);
    CHECK(mt_probe_parse_statm("1 9223372036854775807", 4096, &v) == 0 && v == LLONG_MAX);
    CHECK(mt_probe_parse_limit("max\n", &v) == 0 && v == MT_PROBE_UNLIMITED);
    CHECK(mt_probe_parse_limit("4096\n", &v) == 0 && v == 4096);
    CHECK(mt_probe_parse_limit("18446744073709551615", &v) == 0 && v == MT_PROBE_UNLIMITED);
    CHECK(mt_probe_parse_limit("x", &v) == -1);

    char v2[64], v1[64];
    CHECK(mt_probe_parse_cgroup("5:memory:/a/b\n0::/c\n", v2, sizeof v2, v1, sizeof v1) == 0 &&
          strcmp(v2, "/c") == 0 && strcmp(v1, "/a/b") == 0);
    char tiny[3];
    CHECK(mt_probe_parse_cgroup("0::/too/long\n", tiny, sizeof tiny, v1, sizeof v1) == -1);

    pid_t pids[2];
    CHECK(mt_probe_parse_pids("1 2 3 4", pids, 2) == 2 && pids[1] == 2);

    unsigned long long ticks = 0;
    CHECK(mt_probe_parse_starttime("1 (a) b) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 4242 1",
                                   &ticks) == 0 &&
          ticks == 4242);
    CHECK(mt_probe_parse_starttime("1 (trunc", &ticks) == -1);
    char state = 0;
    CHECK(mt_probe_parse_state("1 (a) Z) Z 1 2", &state) == 0 && state == 'Z');
    CHECK(mt_probe_parse_state("1 (a) S 1 2", &state) == 0 && state == 'S');
    CHECK(mt_probe_parse_state("1 (trunc", &state) == -1);
    CHECK(mt_probe_parse_state("1 (a)", &state) == -1);
    unsigned long long ran = 0, arrivals = 0;
    CHECK(mt_probe_parse_schedstat("1834561 20993 7\n", &ran, &arrivals) == 0 && ran == 1834561 &&
          arrivals == 7);
    CHECK(mt_probe_parse_schedstat("0 0 0\n", &ran, &arrivals) == 0 && arrivals == 0);
    CHECK(mt_probe_parse_schedstat("1834561 20993\n", &ran, &arrivals) == -1);
    CHECK(mt_probe_parse_schedstat("", &ran, &arrivals) == -1);
    CHECK(mt_probe_parse_schedstat("1 x 3\n", &ran, &arrivals) == -1);

    CHECK(mt_probe_parse_private("Rss: 900 kB\nShared_Clean: 100 kB\nPrivate_Clean: 8 kB\n"
                                 "Private_Dirty: 392 kB\n",
                                 &v) == 0 &&
          v == 400 * 1024);
    CHECK(mt_probe_parse_private("Rss: 900 kB\nPrivate_Dirty: 392 kB\n", &v) == -1);

    unsigned long long faults;
    CHECK(mt_probe_parse_majflt("9 (a b) R 1 9 9 0 -1 0 50 0 77 0", &faults) == 0 && faults == 77);
    CHECK(mt_probe_parse_majflt("9 (a b) R 1 9", &faults) == -1);
    CHECK(mt_probe_parse_majflt("9 (a b) R 1 9 9 0 -1 0 50 0 x 0", &faults) == -1);
    double avg;
    CHECK(mt_probe_parse_psi("some avg10=0.05 avg60=0 avg300=0 total=1\n", "some", &avg) == 0 &&
          avg == 0.05);
    CHECK(mt_probe_parse_psi("some avg10=x\n", "some", &avg) == -1);
    mt_probe_swap swap;
    /* v1, memory unlimited: memsw alone bounds both, all of it may go to swap. */
    CHECK(mt_probe_parse_cgroup_swap(1, "3072\n", "1500\n", MT_PROBE_UNLIMITED, 1000, &swap) == 0 &&
          swap.limit == 3072 && swap.used == 500 && swap.room == 2572);
    /* v2, over its swap.max after the limit was lowered: no room, never negative. */
    CHECK(mt_probe_parse_cgroup_swap(2, "100\n", "300\n", -1, -1, &swap) == 0 && swap.room == 0);
    CHECK(mt_probe_parse_cgroup_swap(2, "max\n", "0\n", -1, -1, &swap) == 0 &&
          swap.room == MT_PROBE_UNLIMITED);
    CHECK(mt_probe_parse_cgroup_swap(2, "max\n", "", -1, -1, &swap) == -1);
    CHECK(mt_probe_parse_meminfo_swap("SwapTotal: 8 kB\nSwapFree: 2 kB\n", &swap) == 0 &&
          swap.limit == 8192 && swap.used == 6144 && swap.room == 2048 && swap.version == 0);

    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
