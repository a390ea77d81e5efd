#ifndef CSYSTEM_H
#define CSYSTEM_H
#include <sys/types.h>
int csystem_placeholder(void);
#endif
