//! APNs sender (in progress).
