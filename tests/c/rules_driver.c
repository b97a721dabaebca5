/* Runs the rules parser over each file named on the command line, printing
 * "ok RULES" or its errors as FILE:LINE:COL: message.  Built with ASan and
 * UBSan by tests/test_rules_sanitized.py. */
#include <stdio.h>
#include <stdlib.h>

#include "memtamer/rules.h"

static int
check(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return 2;
    }
    char *text = malloc(MT_RULES_MAX_FILE_BYTES + 2);
    size_t len = text ? fread(text, 1, MT_RULES_MAX_FILE_BYTES + 1, f) : 0;
    fclose(f);
    if (text == NULL) {
        return 2;
    }
    mt_rules_table table;
    mt_rules_errors errors;
    int rc = mt_rules_parse(text, len, &table, &errors);
    free(text);
    if (rc == 0) {
        printf("%s: ok %d\n", path, table.len);
        mt_rules_table_free(&table);
        return 0;
    }
    if (rc == -2) {
        printf("%s: out of memory\n", path);
        return 2;
    }
    for (int i = 0; i < errors.len; i++) {
        printf("%s:%d:%d: %s\n", path, errors.items[i].line, errors.items[i].column,
               errors.items[i].message);
    }
    return 1;
}

int
main(int argc, char **argv)
{
    int worst = 0;
    for (int i = 1; i < argc; i++) {
        int rc = check(argv[i]);
        worst = rc > worst ? rc : worst;
    }
    return worst;
}
