//! Running a function over a list on a few threads at once, keeping the list's order: for reads of
//! many small files, where a cold disk serves several requests together.

/// `f` of every item of `items`, in order, computed by up to `threads` scoped threads (each takes
/// one contiguous part of the list).
pub fn map_in_order<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    if items.is_empty() {
        return Vec::new();
    }
    let per = items.len().div_ceil(threads.max(1));
    let f = &f;
    std::thread::scope(|s| {
        let parts: Vec<_> = items
            .chunks(per)
            .map(|part| s.spawn(move || part.iter().map(f).collect::<Vec<R>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(v) => v,
                // A panic in `f` is a bug: carry it on to the caller.
                Err(p) => std::panic::resume_unwind(p),
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order() {
        let items: Vec<u32> = (0..1000).collect();
        for threads in [1, 3, 16, 2000] {
            assert_eq!(
                map_in_order(&items, threads, |x| x * 2),
                items.iter().map(|x| x * 2).collect::<Vec<_>>()
            );
        }
        assert!(map_in_order(&[] as &[u32], 4, |x| *x).is_empty());
    }
}
