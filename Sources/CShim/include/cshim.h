#ifndef CSHIM_H
#define CSHIM_H
#include <sys/types.h>
int cshim_placeholder(void);
#endif
