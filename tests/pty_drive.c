/*
 * tests/pty_drive.c — drive an interactive program through a real
 * pseudo-terminal, like a person at a keyboard (used by tests/cli_text.sh
 * for `moecpu chat`: line editing, Ctrl-C).
 *
 * usage: pty_drive [-t SECONDS] -- COMMAND [ARGS...]   < SCRIPT
 * SCRIPT lines:
 *   expect TEXT   wait until the program's output since the last match
 *                 contains TEXT
 *   send TEXT     type TEXT; escapes \r (Enter), \n, \t, \\, \xHH
 *                 (\x03 is Ctrl-C: the terminal turns it into SIGINT)
 * After the script: wait for the program to exit.  Everything the program
 * writes is copied to stdout.  Exit status: the program's, or 3 when an
 * expect or the exit took longer than the timeout (default 60 s) or the
 * program died of a signal.
 */
#include <errno.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char seen[1 << 20];
static size_t nseen;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Read what is available within ms; returns -1 at end of output. */
static int pump(int fd, int ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    const int r = poll(&p, 1, ms);
    if (r <= 0) return 0;
    char buf[4096];
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) return -1;     /* EIO once the child has closed the terminal */
    fwrite(buf, 1, (size_t)n, stdout);
    fflush(stdout);
    if (nseen + (size_t)n >= sizeof seen) {   /* keep the newest half */
        memmove(seen, seen + sizeof seen / 2, nseen - sizeof seen / 2);
        nseen -= sizeof seen / 2;
    }
    memcpy(seen + nseen, buf, (size_t)n);
    nseen += (size_t)n;
    return 1;
}

static size_t unescape(const char *s, char *out)
{
    size_t n = 0;
    for (; *s; s++) {
        if (*s != '\\' || !s[1]) {
            out[n++] = *s;
            continue;
        }
        s++;
        if (*s == 'r') out[n++] = '\r';
        else if (*s == 'n') out[n++] = '\n';
        else if (*s == 't') out[n++] = '\t';
        else if (*s == 'x' && s[1] && s[2]) {
            char hex[3] = {s[1], s[2], 0};
            out[n++] = (char)strtol(hex, NULL, 16);
            s += 2;
        } else out[n++] = *s;
    }
    return n;
}

int main(int argc, char **argv)
{
    double timeout = 60;
    int i = 1;
    if (i + 1 < argc && !strcmp(argv[i], "-t")) {
        timeout = atof(argv[i + 1]);
        i += 2;
    }
    if (i >= argc || strcmp(argv[i], "--") || i + 1 >= argc) {
        fprintf(stderr, "usage: pty_drive [-t SECONDS] -- COMMAND [ARGS...] < SCRIPT\n");
        return 2;
    }
    char *script = NULL;
    size_t cap = 0, len = 0;
    {
        char buf[4096];
        size_t r;
        while ((r = fread(buf, 1, sizeof buf, stdin)) > 0) {
            char *np = realloc(script, cap = len + r + 1);
            if (!np) return 2;
            script = np;
            memcpy(script + len, buf, r);
            len += r;
        }
        if (!script && !(script = calloc(1, 1))) return 2;
        script[len] = 0;
    }
    struct winsize ws = {40, 120, 0, 0};
    int fd;
    const pid_t pid = forkpty(&fd, NULL, NULL, &ws);
    if (pid < 0) {
        perror("pty_drive: forkpty");
        return 2;
    }
    if (pid == 0) {
        setenv("TERM", "xterm", 1);
        execvp(argv[i + 1], argv + i + 1);
        perror("pty_drive: exec");
        _exit(127);
    }
    int status = 3, eof = 0;
    size_t from = 0;           /* expect looks at seen[from..) */
    for (char *line = strtok(script, "\n"); line; line = strtok(NULL, "\n")) {
        if (!strncmp(line, "expect ", 7)) {
            const char *want = line + 7;
            const double t0 = now();
            for (;;) {
                seen[nseen] = 0;
                const char *hit = nseen > from ? memmem(seen + from, nseen - from, want, strlen(want)) : NULL;
                if (hit) {
                    from = (size_t)(hit - seen) + strlen(want);
                    break;
                }
                if (eof || now() - t0 > timeout) {
                    fprintf(stdout, "\npty_drive: timed out waiting for '%s'\n", want);
                    kill(pid, SIGKILL);
                    waitpid(pid, NULL, 0);
                    return 3;
                }
                if (pump(fd, 100) < 0) eof = 1;
                if (from > nseen) from = 0;
            }
        } else if (!strncmp(line, "send ", 5)) {
            char out[4096];
            const size_t n = unescape(line + 5, out);
            if (write(fd, out, n) != (ssize_t)n) {
                perror("pty_drive: write");
                break;
            }
        } else if (*line && *line != '#') {
            fprintf(stderr, "pty_drive: unknown script line '%s'\n", line);
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            return 2;
        }
    }
    const double t0 = now();
    for (;;) {
        int st;
        const pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid) {
            while (pump(fd, 50) > 0) {}
            status = WIFEXITED(st) ? WEXITSTATUS(st) : 3;
            break;
        }
        if (now() - t0 > timeout) {
            fprintf(stdout, "\npty_drive: the program did not exit\n");
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            break;
        }
        if (!eof && pump(fd, 100) < 0) eof = 1;
        if (eof) usleep(20000);
    }
    printf("\npty_drive: exit %d\n", status);
    free(script);
    return status;
}
