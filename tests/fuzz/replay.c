/* replay.c: a main() for the fuzz harnesses without libFuzzer, so that gcc builds (plain, ASan,
 * valgrind) run every seed and every saved crash as a regression test.
 *
 * Usage: <harness>_replay FILE_OR_DIR...   runs LLVMFuzzerTestOneInput once per file (a folder:
 * each regular file in it, sorted). Exits 0 when every input ran; a broken invariant aborts. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path)
{
    FILE *file = fopen(path, "rb");
    if (file == NULL) {
        perror(path);
        return 0;
    }
    size_t capacity = 4096, size = 0;
    uint8_t *data = malloc(capacity);
    for (;;) {
        size += fread(data + size, 1, capacity - size, file);
        if (size < capacity)
            break;
        capacity *= 2;
        data = realloc(data, capacity);
        if (data == NULL)
            abort();
    }
    fclose(file);
    /* An exact-size copy, as libFuzzer passes it: reading past the input is caught by ASan. */
    uint8_t *exact = malloc(size ? size : 1);
    memcpy(exact, data, size);
    free(data);
    LLVMFuzzerTestOneInput(exact, size);
    free(exact);
    return 1;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int run_dir(const char *path)
{
    DIR *dir = opendir(path);
    if (dir == NULL) {
        perror(path);
        return 0;
    }
    char **names = NULL;
    size_t count = 0;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] == '.')
            continue;
        names = realloc(names, (count + 1) * sizeof *names);
        names[count++] = strdup(entry->d_name);
    }
    closedir(dir);
    if (count > 1)
        qsort(names, count, sizeof *names, compare_names);
    int ran = 0;
    for (size_t i = 0; i < count; i++) {
        char child[4096];
        snprintf(child, sizeof child, "%s/%s", path, names[i]);
        struct stat info;
        if (stat(child, &info) == 0 && S_ISREG(info.st_mode))
            ran += run_file(child);
        free(names[i]);
    }
    free(names);
    return ran;
}

int main(int argc, char **argv)
{
    LLVMFuzzerInitialize(&argc, &argv);
    int ran = 0;
    for (int i = 1; i < argc; i++) {
        struct stat info;
        if (stat(argv[i], &info) != 0)
            continue; /* a regression folder that does not exist yet */
        ran += S_ISDIR(info.st_mode) ? run_dir(argv[i]) : run_file(argv[i]);
    }
    const char *name = strrchr(argv[0], '/');
    printf("%s: %d inputs replayed\n", name ? name + 1 : argv[0], ran);
    return 0;
}
