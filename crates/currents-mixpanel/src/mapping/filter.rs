//! Which event types the operator chose to export (allow and deny lists).

/// An allow list and a deny list of event type patterns. A pattern is an
/// exact type name or a prefix ending in `.*` (`users.messages.email.*`).
/// With no allow list every type is allowed; the deny list always wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeFilter {
    include: Option<Vec<TypePattern>>,
    exclude: Vec<TypePattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TypePattern {
    Exact(String),
    /// Matches names starting with this, which ends in `.`.
    Prefix(String),
}

impl TypeFilter {
    /// A filter from the two lists; `include: None` means every type.
    pub fn new(include: Option<&[String]>, exclude: &[String]) -> TypeFilter {
        TypeFilter {
            include: include
                .map(|patterns| patterns.iter().map(|p| TypePattern::parse(p)).collect()),
            exclude: exclude.iter().map(|p| TypePattern::parse(p)).collect(),
        }
    }

    /// Whether events of this type are exported.
    pub fn allows(&self, event_type: &str) -> bool {
        let included = match &self.include {
            None => true,
            Some(patterns) => patterns.iter().any(|pattern| pattern.matches(event_type)),
        };
        included
            && !self
                .exclude
                .iter()
                .any(|pattern| pattern.matches(event_type))
    }

    /// Patterns that match no type in the mapping table: usually typos,
    /// though they may also name types Braze added since.
    pub fn unmatched_patterns(&self) -> Vec<String> {
        let patterns = self.include.iter().flatten().chain(&self.exclude);
        patterns
            .filter(|pattern| !super::rules::all_type_names().any(|name| pattern.matches(name)))
            .map(|pattern| pattern.to_string())
            .collect()
    }
}

impl TypePattern {
    fn parse(pattern: &str) -> TypePattern {
        let pattern = pattern.trim();
        match pattern.strip_suffix('*') {
            Some(prefix) if prefix.is_empty() || prefix.ends_with('.') => {
                TypePattern::Prefix(prefix.to_owned())
            }
            _ => TypePattern::Exact(pattern.to_owned()),
        }
    }

    fn matches(&self, event_type: &str) -> bool {
        match self {
            TypePattern::Exact(name) => name == event_type,
            TypePattern::Prefix(prefix) => event_type.starts_with(prefix.as_str()),
        }
    }
}

impl std::fmt::Display for TypePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TypePattern::Exact(name) => f.write_str(name),
            TypePattern::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}
