//! Pulls (§6.2): `OTA.Update {url}`, `/update?url=` and polling download a bundle over HTTP and
//! stream it into the updater as it arrives. The device lock is held for one piece at a time, so
//! the device answers RPC while a pull runs.

use ota_core::updater::UpdateOptions;

use std::sync::MutexGuard;

use super::{Device, SharedDevice, lock};
use crate::app::App;
use crate::app::RpcError;
use crate::file_flash::FileFlash;
use crate::http::client::{DeviceIdentity, PullOutcome};
use crate::net::PullClient;
use crate::service::PullRequest;
use ota_app::Source;

/// Runs the pull; returns Mongoose OS's status message, or the error with its code.
pub fn run(device: &SharedDevice, request: &PullRequest) -> Result<&'static str, RpcError> {
    run_then(device, request, |_, _, _| ()).0
}

/// Runs the pull, then `after` on the application under the same lock as the update's end, so
/// that nothing (the reboot an applied update schedules) runs between the two. `after` does not
/// run when no firmware runs any more.
pub fn run_then<T>(
    device: &SharedDevice,
    request: &PullRequest,
    after: impl FnOnce(&mut App<FileFlash>, u64, &Result<&'static str, RpcError>) -> T,
) -> (Result<&'static str, RpcError>, Option<T>) {
    let (mut d, result) = pull_locked(device, request);
    let then = d.with_app(|app, now| after(app, now, &result)).ok();
    (result, then)
}

/// The pull; returns the device still locked after the update's end.
fn pull_locked<'a>(
    device: &'a SharedDevice,
    request: &PullRequest,
) -> (MutexGuard<'a, Device>, Result<&'static str, RpcError>) {
    let options = UpdateOptions {
        commit_timeout_s: request.commit_timeout_s,
        ignore_same_version: request.ignore_same_version,
    };
    let begun = lock(device).with_app(|app, now| {
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
    });
    let (id, client) = match begun {
        Ok(Ok(begun)) => begun,
        Ok(Err(e)) | Err(e) => return (lock(device), Err(e)),
    };
    let fetched = client.get(&request.url, |piece| {
        lock(device)
            .with_app(|app, now| app.update_data(id, piece, now))
            .and_then(|r| r)
            .map_err(|e| e.message)
    });
    let mut d = lock(device);
    let result = match fetched {
        Ok(PullOutcome::NotModified) => {
            d.with_app(|app, now| app.update_not_modified(id, now)).map(|()| "Not Modified")
        }
        Ok(PullOutcome::Done { .. }) => {
            d.with_app(|app, now| app.update_end(id, now).map(|f| f.message())).and_then(|r| r)
        }
        Err(e) => {
            // A network error leaves the session open; an updater error already closed it.
            d.with_app(|app, now| app.update_abort(id, &format!("pull failed: {e}"), now))
                .and(Err(RpcError::new(e.code, e.message)))
        }
    };
    (d, result)
}
