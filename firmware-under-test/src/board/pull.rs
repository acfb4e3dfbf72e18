//! Pulls (§6.2): `OTA.Update {url}`, `/update?url=` and polling download a bundle over HTTP and
//! stream it into the updater as it arrives. The device lock is held for one piece at a time, so
//! the device answers RPC while a pull runs.

use ota_core::updater::UpdateOptions;

use super::{SharedDevice, lock};
use crate::app::RpcError;
use crate::http::client::{DeviceIdentity, PullOutcome};
use crate::net::PullClient;
use crate::service::PullRequest;
use ota_app::Source;

/// Runs the pull; returns Mongoose OS's status message, or the error with its code.
pub fn run(device: &SharedDevice, request: &PullRequest) -> Result<&'static str, RpcError> {
    let options = UpdateOptions {
        commit_timeout_s: request.commit_timeout_s,
        ignore_same_version: request.ignore_same_version,
    };
    let (id, client) = {
        let mut d = lock(device);
        d.with_app(|app, now| {
            let id = app.update_begin(Source::Pull, options, None, None, now)?;
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
            Ok::<_, RpcError>((id, client))
        })??
    };
    let fetched = client.get(&request.url, |piece| {
        lock(device)
            .with_app(|app, now| app.update_data(id, piece, now))
            .and_then(|r| r)
            .map_err(|e| e.message)
    });
    let mut d = lock(device);
    match fetched {
        Ok(PullOutcome::NotModified) => {
            d.with_app(|app, now| app.update_not_modified(id, now))?;
            Ok("Not Modified")
        }
        Ok(PullOutcome::Done { .. }) => {
            d.with_app(|app, now| app.update_end(id, now).map(|f| f.message()))?
        }
        Err(e) => {
            // A network error leaves the session open; an updater error already closed it.
            d.with_app(|app, now| app.update_abort(id, &format!("pull failed: {e}"), now))?;
            Err(RpcError::new(e.code, e.message))
        }
    }
}
