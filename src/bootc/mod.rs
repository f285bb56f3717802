//! bootc's world: the sysroot, its deployments, bootc's own containers-storage, bound images, GC roots.

pub mod bound_images;
pub mod bound_pull;
pub mod composefs_deployments;
pub mod deployments;
pub mod gc;
pub mod host_images;
pub mod mountns;
pub mod storage;
pub mod sysroot;
