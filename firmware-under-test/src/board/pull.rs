//! Pulls (§6.2): `OTA.Update {url}`, `/update?url=` and polling download a bundle over HTTP and
//! stream it into the updater as it arrives. The device lock is held for one piece at a time, so
//! the device answers RPC while a pull runs.

use ota_core::updater::UpdateOptions;

use super::{SharedDevice, lock};
use crate::app::{RpcError, Source};
use crate::http::client::{DeviceIdentity, PullOutcome};
use crate::net::PullClient;
use crate::service::PullRequest;

/// Runs the pull; returns Mongoose OS's status message, or the error with its code.
pub fn run(device: &SharedDevice, request: &PullRequest) -> Result<&'static str, RpcError> {
    let options = UpdateOptions {
        commit_timeout_s: request.commit_timeout_s,
        ignore_same_version: request.ignore_same_version,
    };
    let client = {
        let mut d = lock(device);
        d.with_app(|app, now| {
            app.update_begin(Source::Pull, options, None, None, now)?;
            let (fw_version, fw_id) = app.version();
            let config = app.config();
            let settings = app.settings();
            let identity = DeviceIdentity {
                device_id: Some(config.device_id.clone()),
                mac: None,
                app: settings.app_name.clone(),
                platform: settings.platform.clone(),
                fw_version,
                fw_id,
            };
            let mut client = PullClient::new(identity);
            client.extra_headers = config.update_extra_http_headers;
            Ok::<_, RpcError>(client)
        })??
    };
    let fetched = client.get(&request.url, |piece| {
        lock(device).with_app(|app, now| app.update_data(piece, now)).and_then(|r| r).map_err(|e| e.message)
    });
    let mut d = lock(device);
    match fetched {
        Ok(PullOutcome::NotModified) => {
            d.with_app(|app, _| app.update_not_modified())?;
            Ok("Not Modified")
        }
        Ok(PullOutcome::Done { .. }) => d.with_app(|app, now| app.update_end(now).map(|f| f.message()))?,
        Err(e) => {
            // A network error leaves the session open; an updater error already closed it.
            d.with_app(|app, _| app.update_abort(&format!("pull failed: {e}")))?;
            Err(RpcError::new(e.code, e.message))
        }
    }
}
