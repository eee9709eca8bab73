//! Cheap random numbers for the request path (request ids, the traffic
//! split): a small generator per thread, seeded from the operating system
//! through `rand`'s thread generator. Unpredictable enough for those jobs;
//! never used for anything secret.

use std::cell::RefCell;

use rand::SeedableRng;
use rand::rngs::SmallRng;

thread_local! {
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_rng(&mut rand::rng()));
}

/// Runs `f` with this thread's generator.
pub fn with<T>(f: impl FnOnce(&mut SmallRng) -> T) -> T {
    RNG.with(|rng| f(&mut rng.borrow_mut()))
}
