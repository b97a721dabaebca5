/* Runs the rules parser over each file named on the command line, printing
 * "ok RULES" or its errors as FILE:LINE:COL: message.  Built with ASan and
 * UBSan by tests/test_rules_sanitized.py. */
#include <stdio.h>
#include <stdlib.h>

#include "memtamer/rules.h"

static int
check(const char *path)
{
    char *text, problem[MT_RULES_MESSAGE_BYTES];
    size_t len;
    int read = mt_rules_read_file(path, &text, &len, problem, sizeof problem);
    if (read < 0) {
        printf("%s: %s\n", path, read == -2 ? "out of memory" : problem);
        return 2;
    }
    mt_rules_table table;
    mt_rules_errors errors;
    int rc = mt_rules_parse(text, len, NULL, &table, &errors);
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
