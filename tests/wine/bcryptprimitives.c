/* Wine 8 lacks bcryptprimitives.dll, whose ProcessPrng Rust's std calls for random bytes
   (HashMap seeds). This stand-in fills the buffer with RtlGenRandom (advapi32's
   SystemFunction036), which Wine has. For running tests under Wine only. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
