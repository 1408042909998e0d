//! Power of two choices: of two backends drawn at random, the one with fewer requests
//! outstanding (Mitzenmacher; what linkerd2-proxy and Envoy's least-request do). It
//! avoids both the herd of pure least-loaded and the blindness of random.

/// The index to send to among `loads.len()` backends, given two random draws. `None`
/// when there is no backend.
pub fn pick(loads: &[usize], draws: (u64, u64)) -> Option<usize> {
    pick_by(loads.len(), |i| loads[i], draws)
}

/// [`pick`] over `n` backends whose loads `load` gives (nothing collected).
pub fn pick_by(n: usize, load: impl Fn(usize) -> usize, draws: (u64, u64)) -> Option<usize> {
    if n == 0 {
        return None;
    }
    let a = (draws.0 % n as u64) as usize;
    if n == 1 {
        return Some(a);
    }
    // The second draw skips the first, so the two candidates always differ.
    let b = (a + 1 + (draws.1 % (n as u64 - 1)) as usize) % n;
    Some(if load(b) < load(a) { b } else { a })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_choices_take_the_less_loaded() {
        type Case<'a> = (&'a [usize], (u64, u64), Option<usize>);
        let table: &[Case] = &[
            (&[], (0, 0), None),
            (&[5], (7, 3), Some(0)),
            (&[3, 1], (0, 0), Some(1)),
            (&[1, 3], (0, 0), Some(0)),
            (&[2, 2], (1, 0), Some(1)),
            (&[0, 9, 9], (1, 1), Some(0)),
            (&[9, 0, 9], (2, 0), Some(2)),
        ];
        for (loads, draws, want) in table {
            assert_eq!(pick(loads, *draws), *want, "{loads:?} {draws:?}");
        }
    }

    #[test]
    fn the_two_candidates_always_differ() {
        for n in 2..6usize {
            for a in 0..20u64 {
                for b in 0..20u64 {
                    let mut loads = vec![1; n];
                    let first = (a % n as u64) as usize;
                    loads[first] = 5;
                    assert_ne!(pick(&loads, (a, b)), Some(first), "n={n} a={a} b={b}");
                }
            }
        }
    }
}
