// libFuzzer's driver entry point, for fuzz targets that keep their own main (SwiftPM gives every
// executable one). Defined by the runtime that `-sanitize=fuzzer` links; nothing else calls it.
// See https://llvm.org/docs/LibFuzzer.html#using-libfuzzer-as-a-library
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
