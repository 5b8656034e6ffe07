// nr-gnb: a gNB-like process for the sched_ext proof in a VM (bench/vm).
//
// The process is named nr-gnb (the operator's match.comm) and runs four tasks:
// the leader and three threads with names of their own (nr-gnb-rlc,
// nr-gnb-gtpu, nr-gnb-slot).  Every task writes an event to the kernel's
// trace ring buffer (tracefs trace_marker) every EVENT_MS, so each record's
// common_pid is that task's TID, as the gtp5g tracer's records are.
//
// One task can be a latency probe (like a slot task): it waits for a line on
// stdin ("go"), then for SECS seconds wakes every PERIOD_US (clock_nanosleep
// TIMER_ABSTIME, CLOCK_MONOTONIC), busy-works WORK_US each period, and records
// how late each wake-up was; a wake-up later than a whole period restarts the
// schedule from now ("missed").
//
//   nr-gnb [-p leader|worker|none] [-s SECS] [-P PERIOD_US] [-w WORK_US] [-e EVENT_MS] [-t PATH]
//
// stdout, one JSON object per line:
//   {"event":"started","tgid":..,"tids":{"nr-gnb":..,...},"first_event_ns":..}
//       once every task has written its first event (first_event_ns: CLOCK_REALTIME
//       of the earliest write, to compare with the scheduler's log)
//   {"event":"probe","position":"leader","tid":..,"n":..,"p50_us":..,...}
//       when the probe is done; the process then lives on (the probe idle, the
//       other tasks still writing events) until stdin reaches EOF, so that its
//       tasks' schedstat can be read after the probe, as before it.
// With -p none it runs until stdin reaches EOF.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define NTASKS 4
static const char *const NAMES[NTASKS] = {"nr-gnb", "nr-gnb-rlc", "nr-gnb-gtpu", "nr-gnb-slot"};
enum { LEADER = 0, SLOT = 3 };

static int marker_fd = -1;
static long event_ms = 100;
static double secs = 10.0;
static long period_us = 1000, work_us = 50;
static int probe_task = -1;  // index into NAMES, or -1
static const char *position = "none";

static pid_t tids[NTASKS];
static long long first_event[NTASKS];  // CLOCK_REALTIME ns of each task's first write
static atomic_int started;             // tasks that have written their first event

static long long now_ns(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "nr-gnb: %s: %s\n", what, strerror(errno));
    exit(1);
}

// One event in the ring buffer, written by the task itself (common_pid = its TID).
static void emit_event(int task, long seq) {
    char line[128];
    int n = snprintf(line, sizeof line, "nr-gnb event task=%s tid=%d seq=%ld\n", NAMES[task],
                     tids[task], seq);
    if (write(marker_fd, line, (size_t)n) < 0 && errno != EBADF) die("write trace_marker");
}

// Write events every event_ms until told to stop; the first one is announced.
static void event_loop(int task) {
    for (long seq = 0;; seq++) {
        if (seq == 0) first_event[task] = now_ns(CLOCK_REALTIME);
        emit_event(task, seq);
        if (seq == 0) atomic_fetch_add(&started, 1);
        struct timespec d = {event_ms / 1000, (event_ms % 1000) * 1000000L};
        nanosleep(&d, NULL);
    }
}

static int cmp_ll(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

// The probe: periodic wake-ups, lateness recorded; also keeps writing an event
// every event_ms so that its task stays a live gNB task in the trace.
static void probe(int task) {
    long cap = (long)(secs * 1e6 / (double)period_us) + 1;
    long long *late = malloc((size_t)cap * sizeof *late);
    if (!late) die("malloc");
    long period = period_us * 1000L, work = work_us * 1000L;
    long long next = now_ns(CLOCK_MONOTONIC), last_event = 0, missed = 0;
    // A fixed wall-clock length, not a fixed count: a probe that keeps missing
    // its period would otherwise run several times longer under a slow case.
    long long end_at = next + (long long)(secs * 1e9);
    long n = 0;
    for (long i = 0; i < cap && next + period <= end_at; i++, n++) {
        next += period;
        struct timespec ts = {next / 1000000000LL, next % 1000000000LL};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
        }
        long long now = now_ns(CLOCK_MONOTONIC);
        late[i] = now - next;
        if (now - last_event >= event_ms * 1000000LL) {
            emit_event(task, i);
            last_event = now;
        }
        long long end = now + work;
        while (now_ns(CLOCK_MONOTONIC) < end) {
        }
        now = now_ns(CLOCK_MONOTONIC);
        if (now > next + period) {  // fell behind by more than a period: resync, count it
            next = now;
            missed++;
        }
    }
    if (n == 0) late[n++] = 0;
    qsort(late, (size_t)n, sizeof *late, cmp_ll);
    long over1ms = 0;
    for (long i = 0; i < n; i++) over1ms += late[i] > 1000000LL;
#define Q(q) (late[(long)((q) * (double)(n - 1))] / 1000.0)
    printf("{\"event\":\"probe\",\"position\":\"%s\",\"tid\":%d,\"n\":%ld,\"p50_us\":%.1f,"
           "\"p90_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.1f,\"over1ms\":%ld,"
           "\"missed\":%lld}\n",
           position, tids[task], n, Q(.5), Q(.9), Q(.99), Q(.999), late[n - 1] / 1000.0, over1ms,
           missed);
    fflush(stdout);
    free(late);
}

static void wait_for_go(void) {
    char buf[16];
    ssize_t r;
    while ((r = read(0, buf, sizeof buf)) < 0 && errno == EINTR) {
    }
    if (r <= 0) exit(0);  // EOF before go: nothing to measure
}

// After the probe: idle until stdin's EOF, then end the process.
static void wait_for_eof(void) {
    char buf[64];
    ssize_t r;
    while ((r = read(0, buf, sizeof buf)) > 0 || (r < 0 && errno == EINTR)) {
    }
    exit(0);
}

static void *thread_main(void *arg) {
    int task = (int)(long)arg;
    tids[task] = (pid_t)syscall(SYS_gettid);
    if (prctl(PR_SET_NAME, NAMES[task]) != 0) die("prctl");
    if (task == probe_task) {
        // announce first, then wait for the go; the events keep coming from here
        first_event[task] = now_ns(CLOCK_REALTIME);
        emit_event(task, 0);
        atomic_fetch_add(&started, 1);
        wait_for_go();
        probe(task);
        wait_for_eof();
    }
    event_loop(task);
    return NULL;
}

static void usage(void) {
    fprintf(stderr,
            "usage: nr-gnb [-p leader|worker|none] [-s SECS] [-P PERIOD_US] [-w WORK_US] "
            "[-e EVENT_MS] [-t TRACE_MARKER]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *marker = "/sys/kernel/tracing/trace_marker";
    int opt;
    while ((opt = getopt(argc, argv, "p:s:P:w:e:t:")) != -1) {
        switch (opt) {
        case 'p':
            position = optarg;
            if (!strcmp(optarg, "leader")) probe_task = LEADER;
            else if (!strcmp(optarg, "worker")) probe_task = SLOT;
            else if (strcmp(optarg, "none")) usage();
            break;
        case 's': secs = atof(optarg); break;
        case 'P': period_us = atol(optarg); break;
        case 'w': work_us = atol(optarg); break;
        case 'e': event_ms = atol(optarg); break;
        case 't': marker = optarg; break;
        default: usage();
        }
    }
    if (secs <= 0 || period_us <= 0 || work_us < 0 || event_ms <= 0) usage();
    if (prctl(PR_SET_NAME, NAMES[LEADER]) != 0) die("prctl");
    marker_fd = open(marker, O_WRONLY | O_CLOEXEC);
    if (marker_fd < 0) die(marker);
    tids[LEADER] = getpid();

    pthread_t th[NTASKS];
    for (long t = 1; t < NTASKS; t++)
        if (pthread_create(&th[t], NULL, thread_main, (void *)t) != 0) die("pthread_create");
    first_event[LEADER] = now_ns(CLOCK_REALTIME);
    emit_event(LEADER, 0);
    atomic_fetch_add(&started, 1);
    while (atomic_load(&started) < NTASKS) {
        struct timespec d = {0, 1000000L};
        nanosleep(&d, NULL);
    }
    long long first = first_event[0];
    for (int t = 1; t < NTASKS; t++)
        if (first_event[t] < first) first = first_event[t];
    printf("{\"event\":\"started\",\"tgid\":%d,\"position\":\"%s\",\"tids\":{", tids[LEADER],
           position);
    for (int t = 0; t < NTASKS; t++) printf("%s\"%s\":%d", t ? "," : "", NAMES[t], tids[t]);
    printf("},\"first_event_ns\":%lld}\n", first);
    fflush(stdout);

    if (probe_task == LEADER) {
        wait_for_go();
        probe(LEADER);
        wait_for_eof();
    }
    // The leader keeps writing events; without a probe it also watches stdin,
    // and ends the process at EOF.
    for (long seq = 1;; seq++) {
        struct pollfd in = {.fd = 0, .events = POLLIN};
        int r = poll(&in, probe_task < 0 ? 1 : 0, (int)event_ms);
        if (r < 0 && errno != EINTR) die("poll");
        if (r > 0) {
            char buf[64];
            ssize_t got = read(0, buf, sizeof buf);
            if (got == 0 || (got < 0 && errno != EINTR)) return 0;
        }
        emit_event(LEADER, seq);
    }
}
