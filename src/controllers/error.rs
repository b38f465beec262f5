//! Why a reconcile failed, once for every kind: the steps they all have (dereference, apply, status, the finalizer
//! around them) and a kind's own steps as `Own`. Bad input is never one of these: it is a status condition.

use std::time::Duration;

use kube::runtime::finalizer;

use super::apply::{ApplyError, ReadError};

/// The steps only one kind has (a PrivateNetwork claiming its range, a migration deleting its source network).
pub trait KindError: std::error::Error + Send + Sync + 'static {
    /// The `reason` label of `appdb_reconcile_errors_total`.
    fn metric_label(&self) -> &'static str;
    /// When to try again: soon, unless a person has to act first.
    fn retry_after(&self) -> Duration {
        RETRY_SOON
    }
}

/// A kind without steps of its own.
impl KindError for std::convert::Infallible {
    fn metric_label(&self) -> &'static str {
        match *self {}
    }
}

/// A kind's own step that is one API call (deleting what a database leaves behind, a migration's source network):
/// `label` names it in metrics, `doing` in the message.
#[derive(Debug, thiserror::Error)]
#[error("{doing} failed: {source}")]
pub struct StepFailed {
    pub label: &'static str,
    pub doing: &'static str,
    pub source: kube::Error,
}

impl KindError for StepFailed {
    fn metric_label(&self) -> &'static str {
        self.label
    }
}

const RETRY_SOON: Duration = Duration::from_secs(5);
/// An object of someone else's holds a name the operator needs: a person must remove it, so retrying every few
/// seconds only adds load.
const RETRY_AFTER_A_PERSON: Duration = Duration::from_secs(30);

/// A failed reconcile, by the step that failed. Counted, logged with the object's name and retried by the one
/// [`super::runtime::error_policy`].
#[derive(Debug)]
pub enum ReconcileError<Own: std::error::Error + 'static> {
    /// The dereference step: reading what the object refers to.
    Dereference(ReadError),
    /// The apply step: reading or writing one child.
    Apply(ApplyError),
    /// Writing the object's status.
    Status(kube::Error),
    /// A step of this kind's own.
    Own(Own),
    /// Adding or removing the finalizer, or a step run inside it (the kube-rs finalizer wraps the step's error).
    Finalizer(Box<finalizer::Error<ReconcileError<Own>>>),
}

impl<Own: KindError> ReconcileError<Own> {
    /// The `reason` label of `appdb_reconcile_errors_total`: the step, looking through the finalizer.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ReconcileError::Dereference(_) => "dereference",
            ReconcileError::Apply(step) => step.metric_label(),
            ReconcileError::Status(_) => "status",
            ReconcileError::Own(own) => own.metric_label(),
            ReconcileError::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e.metric_label(),
                _ => "finalizer",
            },
        }
    }

    /// When to try again, looking through the finalizer: a step's error means the same inside it as outside.
    pub fn retry_after(&self) -> Duration {
        match self {
            ReconcileError::Apply(ApplyError::NameInUse(_)) => RETRY_AFTER_A_PERSON,
            ReconcileError::Own(own) => own.retry_after(),
            ReconcileError::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e.retry_after(),
                _ => RETRY_SOON,
            },
            _ => RETRY_SOON,
        }
    }
}

impl<Own: std::error::Error + 'static> std::fmt::Display for ReconcileError<Own> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReconcileError::Dereference(e) => std::fmt::Display::fmt(e, f),
            ReconcileError::Apply(e) => std::fmt::Display::fmt(e, f),
            ReconcileError::Status(e) => write!(f, "writing status failed: {e}"),
            ReconcileError::Own(e) => std::fmt::Display::fmt(e, f),
            ReconcileError::Finalizer(e) => write!(f, "finalizer: {e}"),
        }
    }
}

impl<Own: std::error::Error + 'static> std::error::Error for ReconcileError<Own> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Transparent: the step's error says what failed, its source why.
            ReconcileError::Dereference(e) => e.source(),
            ReconcileError::Apply(e) => e.source(),
            ReconcileError::Own(e) => e.source(),
            ReconcileError::Status(e) => Some(e),
            ReconcileError::Finalizer(e) => Some(e.as_ref()),
        }
    }
}

impl<Own: std::error::Error + 'static> From<ReadError> for ReconcileError<Own> {
    fn from(e: ReadError) -> Self {
        ReconcileError::Dereference(e)
    }
}

impl<Own: std::error::Error + 'static> From<ApplyError> for ReconcileError<Own> {
    fn from(e: ApplyError) -> Self {
        ReconcileError::Apply(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::apply::{NameInUse, read};

    #[derive(Debug, thiserror::Error)]
    enum Own {
        #[error("still in use")]
        InUse,
    }

    impl KindError for Own {
        fn metric_label(&self) -> &'static str {
            "in_use"
        }
        fn retry_after(&self) -> Duration {
            Duration::from_secs(30)
        }
    }

    fn failed() -> kube::Error {
        kube::Error::SerdeError(serde_json::from_str::<u8>("x").unwrap_err())
    }

    #[test]
    fn a_step_inside_the_finalizer_is_labelled_and_retried_as_the_step() {
        let in_use = ReconcileError::Finalizer(Box::new(finalizer::Error::CleanupFailed(ReconcileError::Own(
            Own::InUse,
        ))));
        assert_eq!(in_use.metric_label(), "in_use");
        assert_eq!(in_use.retry_after(), Duration::from_secs(30));
        let name_in_use: ReconcileError<Own> = ReconcileError::Finalizer(Box::new(finalizer::Error::ApplyFailed(
            ReconcileError::Apply(ApplyError::NameInUse(NameInUse {
                kind: "Secret".into(),
                name: "orders-root".into(),
            })),
        )));
        assert_eq!(name_in_use.metric_label(), "name_in_use");
        assert_eq!(name_in_use.retry_after(), RETRY_AFTER_A_PERSON);
        let adding: ReconcileError<Own> = ReconcileError::Finalizer(Box::new(finalizer::Error::AddFinalizer(failed())));
        assert_eq!(adding.metric_label(), "finalizer");
        assert_eq!(adding.retry_after(), RETRY_SOON);
    }

    #[test]
    fn each_step_reads_as_its_own_message() {
        let dereference: ReconcileError<Own> = read("the admin Secret")(failed()).into();
        assert_eq!(dereference.metric_label(), "dereference");
        assert!(dereference.to_string().starts_with("reading the admin Secret failed: "));
        let status: ReconcileError<Own> = ReconcileError::Status(failed());
        assert_eq!(status.metric_label(), "status");
        assert!(status.to_string().starts_with("writing status failed: "));
        assert_eq!(ReconcileError::Own(Own::InUse).to_string(), "still in use");
    }
}
