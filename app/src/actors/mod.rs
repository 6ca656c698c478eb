//! The actors of the application; today only the database executors.

pub mod db;
