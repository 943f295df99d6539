//! The process's memory allocator and its settings. Nothing here may allocate: the
//! settings are applied before the first allocation.

/// mimalloc rather than glibc's allocator: a request allocates and frees many small
/// buffers across two worker threads, where glibc's arenas spent about a tenth of the
/// server's CPU time (malloc, free and their consolidation) in profiles of the API.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` in mimalloc's `mi_option_e` (v3), which the Rust
/// bindings do not name.
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Makes mimalloc commit memory as it is used rather than a whole arena at once (its
/// default on Linux): idle RSS 35 MB instead of 21 MB, and 55 MB instead of 32 MB after a
/// load, for no measured gain. It must run before the first allocation creates the first
/// arena, so it is a static constructor (the runtime allocates before `main`); setting an
/// option only stores a value.
extern "C" fn tune_allocator() {
    // SAFETY: sets a process-wide option of the allocator; any value is valid.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
}

#[used]
#[link_section = ".init_array"]
static TUNE_ALLOCATOR: extern "C" fn() = tune_allocator;
