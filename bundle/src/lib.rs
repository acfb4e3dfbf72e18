//! Builds Mongoose OS compatible `fw.zip` bundles on the host.
