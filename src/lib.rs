//! dataleaf: a classifier's view of its input space — the local data matrix G, the data leaf, the
//! noise leaves. Data flows one way: data + model -> geometry -> walk -> (app | export | experiments).

pub mod app;
pub mod data;
pub mod experiments;
pub mod export;
pub mod geometry;
pub mod model;
pub mod walk;
