/* cx_sysmem.c: RSS, MemAvailable and the memory cgroup's limit and usage, read from /proc and
 * /sys/fs/cgroup into stack buffers. */
#include "cx_sysmem.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* cgroup v1 writes "no limit" as PAGE_COUNTER_MAX pages (9223372036854771712 on x86-64). */
#define CGROUP_UNLIMITED ((int64_t)1 << 62)
#define PATH_SIZE CX_SYSMEM_PATH_SIZE
#define FILE_BUFFER 8192 /* /proc/self/status, /proc/meminfo, memory.stat all fit */

/* ---- Reading small files into stack buffers. ---- */

/* Reads at most size - 1 bytes of `path` into `buffer`, NUL-terminated. Returns the length, or
 * -1 with errno set. No allocation: safe on the pressure path. */
static ssize_t read_small(const char *path, char *buffer, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t used = 0;
    while (used + 1 < size) {
        ssize_t got = read(fd, buffer + used, size - 1 - used);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            int saved = errno;
            close(fd);
            errno = saved;
            return -1;
        }
        if (got == 0)
            break;
        used += (size_t)got;
    }
    close(fd);
    buffer[used] = '\0';
    return (ssize_t)used;
}

/* The number after `key` at the start of a line of `text` ("VmRSS:\t 1234 kB", "inactive_file
 * 4096"), or -1 when no line starts with key or no digits follow. */
static int64_t find_field(const char *text, const char *key)
{
    const size_t key_length = strlen(key);
    for (const char *line = text; line != NULL && *line != '\0';) {
        if (strncmp(line, key, key_length) == 0) {
            const char *p = line + key_length;
            while (*p == ' ' || *p == '\t')
                ++p;
            if (*p < '0' || *p > '9')
                return -1;
            int64_t value = 0;
            while (*p >= '0' && *p <= '9' && value < INT64_MAX / 10)
                value = value * 10 + (*p++ - '0');
            return value;
        }
        line = strchr(line, '\n');
        if (line != NULL)
            ++line;
    }
    return -1;
}

/* The numbers after `first` and `second` in the "key: N kB" lines of `path`, in bytes; each -1
 * when the file or its line is unreadable. */
static void read_kb_pair(const char *path, const char *first, const char *second, int64_t *a,
                         int64_t *b)
{
    char buffer[FILE_BUFFER];
    *a = *b = -1;
    if (read_small(path, buffer, sizeof buffer) < 0)
        return;
    int64_t kb = find_field(buffer, first);
    *a = kb >= 0 ? kb * 1024 : -1;
    kb = find_field(buffer, second);
    *b = kb >= 0 ? kb * 1024 : -1;
}

void cx_sysmem_read_process(int64_t *rss, int64_t *peak)
{
    read_kb_pair("/proc/self/status", "VmRSS:", "VmHWM:", rss, peak);
}

void cx_sysmem_read_system(int64_t *available, int64_t *total)
{
    read_kb_pair("/proc/meminfo", "MemAvailable:", "MemTotal:", available, total);
}

int64_t cx_sysmem_cgroup_usage(const cx_cgroup_info *cgroup)
{
    char buffer[FILE_BUFFER];
    if (cgroup->version == 0 || cgroup->usage_path[0] == '\0' ||
        read_small(cgroup->usage_path, buffer, sizeof buffer) < 0)
        return -1;
    int64_t usage = find_field(buffer, "");
    if (usage < 0)
        return -1;
    if (read_small(cgroup->stat_path, buffer, sizeof buffer) >= 0) {
        int64_t inactive =
            find_field(buffer, cgroup->version == 1 ? "total_inactive_file " : "inactive_file ");
        if (inactive > 0 && inactive < usage)
            usage -= inactive;
    }
    return usage;
}

/* ---- cgroup discovery. ---- */

/* The path of the memory cgroup in a /proc/self/cgroup text: a v1 line "N:a,memory,b:/path"
 * wins (hybrid systems mount the memory controller on v1), else the v2 line "0::/path". Copies
 * the path into `path` and returns the version, or 0 when neither is there. */
static int cgroup_path_of(const char *text, char *path, size_t size)
{
    int version = 0;
    for (const char *line = text; *line != '\0';) {
        const char *end = strchr(line, '\n');
        size_t length = end != NULL ? (size_t)(end - line) : strlen(line);
        const char *first = memchr(line, ':', length);
        const char *second =
            first != NULL ? memchr(first + 1, ':', length - (size_t)(first + 1 - line)) : NULL;
        if (second != NULL) {
            const char *controllers = first + 1;
            size_t controllers_length = (size_t)(second - controllers);
            size_t path_length = length - (size_t)(second + 1 - line);
            int is_v1_memory = 0;
            for (const char *c = controllers; c < second;) {
                const char *comma = memchr(c, ',', (size_t)(second - c));
                const char *stop = comma != NULL ? comma : second;
                if (stop - c == 6 && strncmp(c, "memory", 6) == 0)
                    is_v1_memory = 1;
                c = stop + 1;
            }
            int is_v2 = controllers_length == 0 && first - line == 1 && line[0] == '0';
            if ((is_v1_memory || (is_v2 && version == 0)) && path_length < size) {
                memcpy(path, second + 1, path_length);
                path[path_length] = '\0';
                version = is_v1_memory ? 1 : 2;
                if (is_v1_memory)
                    return 1;
            }
        }
        if (end == NULL)
            break;
        line = end + 1;
    }
    return version;
}

/* "<directory>/<name>" into `out`; -1 when it does not fit. */
static int join_path(char *out, size_t size, const char *directory, const char *name)
{
    int length = snprintf(out, size, "%s/%s", directory, name);
    return length >= 0 && (size_t)length < size ? 0 : -1;
}

static int is_directory_with(const char *directory, const char *name)
{
    char path[PATH_SIZE];
    return join_path(path, sizeof path, directory, name) == 0 && access(path, F_OK) == 0;
}

/* Copies `text` into the fixed-size directory field; -1 when it does not fit. */
static int copy_directory(cx_cgroup_info *out, const char *text)
{
    size_t length = strlen(text);
    if (length >= sizeof out->directory)
        return -1;
    memcpy(out->directory, text, length + 1);
    return 0;
}

/* Parses one limit file's text: a number of bytes, or "max" (v2) for none. Values at or above
 * CGROUP_UNLIMITED (v1's "no limit") read as none. Returns 0 and sets *limit (0 = none), or -1. */
static int parse_limit(const char *text, int64_t *limit)
{
    while (*text == ' ' || *text == '\t')
        ++text;
    if (strncmp(text, "max", 3) == 0) {
        *limit = 0;
        return 0;
    }
    if (*text < '0' || *text > '9')
        return -1;
    char *end = NULL;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    if (errno == ERANGE || value >= (unsigned long long)CGROUP_UNLIMITED) {
        *limit = 0;
        return 0;
    }
    while (*end == ' ' || *end == '\t' || *end == '\n')
        ++end;
    if (*end != '\0')
        return -1;
    *limit = (int64_t)value;
    return 0;
}

cx_status cx_sysmem_read_cgroup(const char *root, cx_cgroup_info *out, cx_error *err)
{
    memset(out, 0, sizeof *out);
    out->usage_bytes = -1;
    if (root == NULL || strcmp(root, "/") == 0)
        root = "";
    if (strlen(root) > 512)
        return cx_error_set(err, CX_ERR_ARGUMENT, "cgroup root (%.64s...): longer than 512 bytes",
                            root);

    char buffer[FILE_BUFFER], path[PATH_SIZE], mount[PATH_SIZE], directory[PATH_SIZE];
    snprintf(path, sizeof path, "%s/proc/self/cgroup", root);
    if (read_small(path, buffer, sizeof buffer) < 0)
        return CX_OK; /* no cgroups here (or not Linux): nothing limits us this way */
    char cgroup[PATH_SIZE];
    int version = cgroup_path_of(buffer, cgroup, sizeof cgroup);
    if (version == 0)
        return CX_OK;

    const char *limit_name = version == 1 ? "memory.limit_in_bytes" : "memory.max";
    const char *usage_name = version == 1 ? "memory.usage_in_bytes" : "memory.current";
    if (version == 1)
        snprintf(mount, sizeof mount, "%s/sys/fs/cgroup/memory", root);
    else {
        snprintf(mount, sizeof mount, "%s/sys/fs/cgroup", root);
        if (!is_directory_with(mount, "cgroup.controllers"))
            snprintf(mount, sizeof mount, "%s/sys/fs/cgroup/unified", root);
    }
    /* Strip a trailing "/" of the cgroup path ("/" itself becomes ""). */
    size_t cgroup_length = strlen(cgroup);
    while (cgroup_length > 0 && cgroup[cgroup_length - 1] == '/')
        cgroup[--cgroup_length] = '\0';
    if (snprintf(directory, sizeof directory, "%s%s", mount, cgroup) >= (int)sizeof directory)
        return cx_error_set(err, CX_ERR_ARGUMENT, "cgroup (%s): path too long", cgroup);

    /* Walk from the process's cgroup up to the mount: a limit on any ancestor binds us too. The
     * deepest directory that exists is ours (a container sees its own cgroup as the mount). */
    const size_t mount_length = strlen(mount);
    int found_directory = 0;
    for (;;) {
        if (join_path(path, sizeof path, directory, limit_name) != 0)
            return cx_error_set(err, CX_ERR_ARGUMENT, "cgroup (%s): path too long", directory);
        if (read_small(path, buffer, sizeof buffer) >= 0) {
            int64_t limit = 0;
            if (parse_limit(buffer, &limit) != 0)
                return cx_error_set(err, CX_ERR_IO,
                                    "cgroup memory limit (%s): not a number or \"max\": %.40s",
                                    path, buffer);
            if (limit > 0 && (out->limit_bytes == 0 || limit < out->limit_bytes))
                out->limit_bytes = limit;
            if (!found_directory)
                found_directory = copy_directory(out, directory) == 0;
        } else if (!found_directory && is_directory_with(directory, usage_name)) {
            /* v2's root cgroup has memory.current but no memory.max */
            found_directory = copy_directory(out, directory) == 0;
        }
        size_t length = strlen(directory);
        if (length <= mount_length)
            break;
        char *slash = strrchr(directory + mount_length, '/');
        if (slash == NULL)
            break;
        *slash = '\0';
    }
    if (!found_directory)
        return CX_OK; /* the controller is not mounted where we look: treat as no cgroup */
    /* The directory is shorter than the paths' room, so both joins fit. */
    if (join_path(out->usage_path, sizeof out->usage_path, out->directory, usage_name) != 0 ||
        join_path(out->stat_path, sizeof out->stat_path, out->directory, "memory.stat") != 0)
        return cx_error_set(err, CX_ERR_ARGUMENT, "cgroup (%s): path too long", out->directory);
    out->version = version;
    out->usage_bytes = cx_sysmem_cgroup_usage(out);
    return CX_OK;
}
