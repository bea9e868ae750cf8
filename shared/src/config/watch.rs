//! Live reload: the config is read again on SIGHUP or when the file changes, validated, and
//! published to every subscriber. A file that does not validate changes nothing: the running
//! config stays, and the errors are logged (and returned by [`ConfigWatcher::reload`]).

use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{
    error::{ConfigError, ConfigErrors},
    model::Config,
    overrides::Overrides,
};

/// How often the file is looked at for changes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What a reload did.
#[derive(Debug, Clone, PartialEq)]
pub enum Reloaded {
    /// The file's bytes had not changed since the last load; nothing was done.
    Unchanged,
    /// The file was read and validated, and its config published (subscribers are woken
    /// only if the config differs from the running one).
    Published(Arc<Config>),
}

/// Keeps a config file's validated config current for its subscribers.
pub struct ConfigWatcher {
    path: PathBuf,
    overrides: Overrides,
    tx: watch::Sender<Arc<Config>>,
    /// The bytes last read, so a poll that finds them unchanged does no work. Comparing
    /// contents rather than mtimes also catches two writes within one mtime tick.
    last: Option<Vec<u8>>,
}

impl ConfigWatcher {
    /// Loads `path`, applies `overrides` (again after every reload), and starts publishing.
    pub async fn load(
        path: impl Into<PathBuf>,
        overrides: Overrides,
    ) -> Result<Self, ConfigErrors> {
        let path = path.into();
        let (bytes, config) = read_and_validate(path.clone(), &overrides).await?;
        let (tx, _) = watch::channel(Arc::new(config));
        Ok(ConfigWatcher {
            path,
            overrides,
            tx,
            last: Some(bytes),
        })
    }

    /// A receiver that sees the current config and every change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Config>> {
        self.tx.subscribe()
    }

    /// The running config.
    pub fn current(&self) -> Arc<Config> {
        self.tx.borrow().clone()
    }

    /// Reads and validates the file now, whether or not it changed (SIGHUP's path). On an
    /// error the running config stays.
    pub async fn reload(&mut self) -> Result<Arc<Config>, ConfigErrors> {
        let (bytes, config) = read_and_validate(self.path.clone(), &self.overrides).await?;
        self.last = Some(bytes);
        Ok(self.publish(config))
    }

    /// Reloads when the file's bytes differ from those last read (the poll's path). A file
    /// that is gone or unreadable is reported once, then again only after it changes.
    pub async fn reload_if_changed(&mut self) -> Result<Reloaded, ConfigErrors> {
        let path = self.path.clone();
        let bytes = tokio::task::spawn_blocking(move || std::fs::read(path))
            .await
            .ok()
            .and_then(Result::ok);
        if bytes == self.last {
            return Ok(Reloaded::Unchanged);
        }
        self.last = bytes.clone();
        let Some(bytes) = bytes else {
            return Err(unreadable(&self.path, "cannot be read any more"));
        };
        let path = self.path.clone();
        let overrides = self.overrides.clone();
        let config = tokio::task::spawn_blocking(move || {
            let mut config = super::parse_bytes(&bytes, &path)?;
            config.apply_overrides(&overrides);
            Ok::<_, ConfigErrors>(config)
        })
        .await
        .map_err(|e| unreadable(&self.path, &format!("validation stopped: {e}")))??;
        Ok(Reloaded::Published(self.publish(config)))
    }

    fn publish(&self, config: Config) -> Arc<Config> {
        let config = Arc::new(config);
        self.tx.send_if_modified(|running| {
            if **running == *config {
                false
            } else {
                *running = config.clone();
                true
            }
        });
        config
    }

    /// Polls the file every [`POLL_INTERVAL`] and reloads on SIGHUP, until `shutdown`.
    /// Failed reloads are logged with every error; the running config stays.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut hangup = Hangup::new();
        loop {
            let result = tokio::select! {
                () = shutdown.cancelled() => return,
                _ = poll.tick() => self.reload_if_changed().await,
                () = hangup.recv() => {
                    tracing::info!(path = %self.path.display(), "SIGHUP: reloading the config");
                    self.reload().await.map(Reloaded::Published)
                }
            };
            match result {
                Ok(Reloaded::Unchanged) => {}
                Ok(Reloaded::Published(_)) => {
                    tracing::info!(path = %self.path.display(), "config reloaded");
                }
                Err(errors) => {
                    for error in errors.errors() {
                        tracing::warn!(%error, "config reload refused; the running config stays");
                    }
                }
            }
        }
    }
}

async fn read_and_validate(
    path: PathBuf,
    overrides: &Overrides,
) -> Result<(Vec<u8>, Config), ConfigErrors> {
    let overrides = overrides.clone();
    let shown = path.clone();
    tokio::task::spawn_blocking(move || {
        let bytes =
            std::fs::read(&path).map_err(|e| unreadable(&path, &format!("cannot be read: {e}")))?;
        let mut config = super::parse_bytes(&bytes, &path)?;
        config.apply_overrides(&overrides);
        Ok((bytes, config))
    })
    .await
    .map_err(|e| unreadable(&shown, &format!("validation stopped: {e}")))?
}

fn unreadable(path: &std::path::Path, why: &str) -> ConfigErrors {
    ConfigErrors(vec![ConfigError {
        file: path.display().to_string(),
        line: None,
        key: String::new(),
        message: why.to_owned(),
    }])
}

/// SIGHUP where there is such a thing; elsewhere a signal that never comes.
struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    fn new() -> Self {
        #[cfg(unix)]
        {
            let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .map_err(|e| tracing::warn!(error = %e, "cannot listen for SIGHUP; the config reloads on file changes only"))
                .ok();
            Hangup { signal }
        }
        #[cfg(not(unix))]
        Hangup {}
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal {
            if signal.recv().await.is_some() {
                return;
            }
            // The signal stream ended: stop listening rather than spin.
            self.signal = None;
        }
        std::future::pending::<()>().await
    }
}
