/**
 * Bytes in one memory page: the kernel's base page on the x86-64 hosts ferry runs on. CRIU's page
 * images are in these units (a pagemap entry counts pages, pages-*.img holds them back to back), so
 * every address, length and offset of memory moved between hosts is a multiple of it.
 */
export const PAGE_BYTES = 4096;
