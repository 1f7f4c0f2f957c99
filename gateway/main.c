#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("gateway %s\n", GATEWAY_VERSION);
        return 0;
    }
    fprintf(stderr, "usage: gateway --version\n");
    return 2;
}
