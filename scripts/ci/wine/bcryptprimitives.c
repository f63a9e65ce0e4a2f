/*
 * bcryptprimitives.dll for Wine 8.0, which lacks it: Rust >= 1.78 std imports ProcessPrng from it,
 * so without this DLL every Rust .exe dies before main (wine exit code 53).
 * ProcessPrng fills the buffer from advapi32's RtlGenRandom (SystemFunction036). That call takes a
 * ULONG length, so large requests are served in chunks.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

#define CHUNK 0x40000000UL

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG n = length > CHUNK ? CHUNK : (ULONG)length;
        if (!SystemFunction036(data, n))
            return FALSE;
        data += n;
        length -= n;
    }
    return TRUE;
}

BOOL WINAPI DllMain(HINSTANCE instance, DWORD reason, LPVOID reserved)
{
    (void)instance;
    (void)reason;
    (void)reserved;
    return TRUE;
}
