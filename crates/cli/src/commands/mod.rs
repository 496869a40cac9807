pub mod alerts;
pub mod demo;
pub mod forward;
pub mod migrate;
pub mod read;
pub mod serve;
pub mod sim;
pub mod sync;
