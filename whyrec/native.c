/* Linked into every whyrec C library by whyrec.native: what the library was compiled with. */
int whyrec_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}
