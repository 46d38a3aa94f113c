//! The broker's authorization errors as one line: which principal lacked which operation on
//! what resource, and what to do. Each place that sends a request knows what the request
//! needed (a Produce needs WRITE on the topic, a JoinGroup READ on the group), so it names the
//! operation and resource here; the principal is the one the settings authenticate as.

use std::fmt;

use kafka_protocol::ResponseError;

/// An ACL operation, as Kafka's `kafka-acls --operation` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Read,
    Write,
    Create,
    Delete,
    Describe,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Read => "READ",
            Operation::Write => "WRITE",
            Operation::Create => "CREATE",
            Operation::Delete => "DELETE",
            Operation::Describe => "DESCRIBE",
        })
    }
}

/// What the operation was on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Topic(String),
    Group(String),
    /// Creating this topic: Kafka allows it with CREATE on the cluster or on the topic.
    NewTopic(String),
}

/// One refusal by the broker's authorizer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.line())]
pub struct Denied {
    /// `User:<name>`, as the cluster's ACLs name it.
    pub principal: String,
    pub operation: Operation,
    pub resource: Resource,
    pub error: ResponseError,
}

impl Denied {
    pub fn new(
        principal: impl Into<String>,
        operation: Operation,
        resource: Resource,
        error: ResponseError,
    ) -> Self {
        Self {
            principal: principal.into(),
            operation,
            resource,
            error,
        }
    }

    fn line(&self) -> String {
        let who = &self.principal;
        let op = self.operation;
        let code = code_name(self.error);
        match &self.resource {
            Resource::Topic(topic) => {
                let (to, credentials) = match op {
                    Operation::Write => ("to ", ", or use the producer's credentials"),
                    Operation::Read => ("", ", or use the consumer's credentials"),
                    Operation::Delete => ("", ", or leave out --reset"),
                    _ => ("", ""),
                };
                format!(
                    "{who} is not allowed to {op} {to}topic {topic} ({code}); ask the cluster's \
                     admin for an ACL allowing {op} on topic {topic}{credentials}"
                )
            }
            Resource::Group(group) => format!(
                "{who} is not allowed to {op} group {group} ({code}); ask the cluster's admin for \
                 an ACL allowing READ on group {group}, or use --group with a group you may read"
            ),
            Resource::NewTopic(topic) => format!(
                "{who} is not allowed to CREATE topic {topic} on the cluster ({code}); ask the \
                 cluster's admin to create topic {topic}, or for CREATE on the cluster or on the \
                 topic"
            ),
        }
    }
}

/// True for the codes by which an authorizer says no.
pub fn is_authorization(error: ResponseError) -> bool {
    matches!(
        error,
        ResponseError::TopicAuthorizationFailed
            | ResponseError::GroupAuthorizationFailed
            | ResponseError::ClusterAuthorizationFailed
            | ResponseError::TransactionalIdAuthorizationFailed
            | ResponseError::DelegationTokenAuthorizationFailed
    )
}

/// Kafka's own name for an error code, as its logs and tools print it:
/// `TopicAuthorizationFailed` → `TOPIC_AUTHORIZATION_FAILED`.
pub fn code_name(error: ResponseError) -> String {
    let camel = format!("{error:?}");
    let mut name = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_print_as_kafka_names_them() {
        assert_eq!(
            code_name(ResponseError::TopicAuthorizationFailed),
            "TOPIC_AUTHORIZATION_FAILED"
        );
        assert_eq!(
            code_name(ResponseError::SaslAuthenticationFailed),
            "SASL_AUTHENTICATION_FAILED"
        );
        assert_eq!(
            code_name(ResponseError::IllegalSaslState),
            "ILLEGAL_SASL_STATE"
        );
    }

    #[test]
    fn each_refusal_names_principal_operation_and_resource_in_one_line() {
        let topic = || Resource::Topic("temperatures".into());
        let cases = [
            (
                Denied::new(
                    "User:consumer",
                    Operation::Write,
                    topic(),
                    ResponseError::TopicAuthorizationFailed,
                ),
                "User:consumer is not allowed to WRITE to topic temperatures (TOPIC_AUTHORIZATION_FAILED); ask the cluster's admin for an ACL allowing WRITE on topic temperatures, or use the producer's credentials",
            ),
            (
                Denied::new(
                    "User:producer",
                    Operation::Read,
                    topic(),
                    ResponseError::TopicAuthorizationFailed,
                ),
                "User:producer is not allowed to READ topic temperatures (TOPIC_AUTHORIZATION_FAILED); ask the cluster's admin for an ACL allowing READ on topic temperatures, or use the consumer's credentials",
            ),
            (
                Denied::new(
                    "User:consumer",
                    Operation::Read,
                    Resource::Group("other".into()),
                    ResponseError::GroupAuthorizationFailed,
                ),
                "User:consumer is not allowed to READ group other (GROUP_AUTHORIZATION_FAILED); ask the cluster's admin for an ACL allowing READ on group other, or use --group with a group you may read",
            ),
            (
                Denied::new(
                    "User:consumer",
                    Operation::Create,
                    Resource::NewTopic("temperatures".into()),
                    ResponseError::TopicAuthorizationFailed,
                ),
                "User:consumer is not allowed to CREATE topic temperatures on the cluster (TOPIC_AUTHORIZATION_FAILED); ask the cluster's admin to create topic temperatures, or for CREATE on the cluster or on the topic",
            ),
            (
                Denied::new(
                    "User:producer",
                    Operation::Delete,
                    topic(),
                    ResponseError::TopicAuthorizationFailed,
                ),
                "User:producer is not allowed to DELETE topic temperatures (TOPIC_AUTHORIZATION_FAILED); ask the cluster's admin for an ACL allowing DELETE on topic temperatures, or leave out --reset",
            ),
        ];
        for (denied, line) in cases {
            assert_eq!(denied.to_string(), line);
        }
    }

    #[test]
    fn authorization_codes_are_told_from_the_rest() {
        assert!(is_authorization(ResponseError::TopicAuthorizationFailed));
        assert!(is_authorization(ResponseError::ClusterAuthorizationFailed));
        assert!(!is_authorization(ResponseError::NotLeaderOrFollower));
        assert!(!ResponseError::TopicAuthorizationFailed.is_retriable());
        assert!(!ResponseError::GroupAuthorizationFailed.is_retriable());
    }
}
