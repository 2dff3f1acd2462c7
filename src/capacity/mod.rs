//! Capacity at scale, as data: the account quotas a pipeline counts against ([`quotas`], the one
//! table of them with their sources), what one pipeline consumes in each account
//! ([`footprint`], counted from its rendered stacks), which tooling account a new pipeline goes
//! to ([`placement`]), whether a deploy fits the usage read from its accounts ([`fit`]), and many
//! pipelines placed over the org's tooling accounts ([`scale`]).
//!
//! Pure: the deploy reads the accounts' usage and quotas ([`crate::deploy::capacity`]) and
//! records a pipeline's placement in its owner record ([`crate::owner`]).

pub mod fit;
pub mod footprint;
pub mod placement;
pub mod quotas;
pub mod scale;

pub use footprint::{AccountFootprint, Counts, Footprint};
pub use placement::{Candidates, PlacedBy, candidates, provisional};
pub use quotas::{AccountQuota, QUOTAS, Resource};
