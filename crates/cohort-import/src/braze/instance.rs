//! Braze instances (data clusters) and their REST endpoints. A workspace
//! lives on one instance and its API keys work only there, so the instance
//! is part of the configuration, spelled as Braze's dashboard spells it
//! (`US-03`).

use std::fmt;

/// A Braze instance: the cluster a workspace lives on, which decides the
/// REST endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Instance {
    /// US-01 (`rest.iad-01.braze.com`).
    #[default]
    Us01,
    /// US-02 (`rest.iad-02.braze.com`).
    Us02,
    /// US-03 (`rest.iad-03.braze.com`).
    Us03,
    /// US-04 (`rest.iad-04.braze.com`).
    Us04,
    /// US-05 (`rest.iad-05.braze.com`).
    Us05,
    /// US-06 (`rest.iad-06.braze.com`).
    Us06,
    /// US-07 (`rest.iad-07.braze.com`).
    Us07,
    /// US-08 (`rest.iad-08.braze.com`).
    Us08,
    /// US-10 (`rest.us-10.braze.com`).
    Us10,
    /// EU-01 (`rest.fra-01.braze.eu`).
    Eu01,
    /// EU-02 (`rest.fra-02.braze.eu`).
    Eu02,
    /// AU-01 (`rest.au-01.braze.com`).
    Au01,
    /// JP-01 (`rest.jp-01.braze.com`).
    Jp01,
    /// ID-01 (`rest.id-01.braze.com`).
    Id01,
    /// KR-01 (`rest.kr-01.braze.com`).
    Kr01,
}

impl Instance {
    /// Every instance, in Braze's order.
    pub const ALL: [Instance; 15] = [
        Instance::Us01,
        Instance::Us02,
        Instance::Us03,
        Instance::Us04,
        Instance::Us05,
        Instance::Us06,
        Instance::Us07,
        Instance::Us08,
        Instance::Us10,
        Instance::Eu01,
        Instance::Eu02,
        Instance::Au01,
        Instance::Jp01,
        Instance::Id01,
        Instance::Kr01,
    ];

    /// The instance's name as Braze writes it, e.g. `US-03`.
    pub const fn name(self) -> &'static str {
        match self {
            Instance::Us01 => "US-01",
            Instance::Us02 => "US-02",
            Instance::Us03 => "US-03",
            Instance::Us04 => "US-04",
            Instance::Us05 => "US-05",
            Instance::Us06 => "US-06",
            Instance::Us07 => "US-07",
            Instance::Us08 => "US-08",
            Instance::Us10 => "US-10",
            Instance::Eu01 => "EU-01",
            Instance::Eu02 => "EU-02",
            Instance::Au01 => "AU-01",
            Instance::Jp01 => "JP-01",
            Instance::Id01 => "ID-01",
            Instance::Kr01 => "KR-01",
        }
    }

    /// The REST endpoint, without a trailing `/`.
    pub const fn rest_url(self) -> &'static str {
        match self {
            Instance::Us01 => "https://rest.iad-01.braze.com",
            Instance::Us02 => "https://rest.iad-02.braze.com",
            Instance::Us03 => "https://rest.iad-03.braze.com",
            Instance::Us04 => "https://rest.iad-04.braze.com",
            Instance::Us05 => "https://rest.iad-05.braze.com",
            Instance::Us06 => "https://rest.iad-06.braze.com",
            Instance::Us07 => "https://rest.iad-07.braze.com",
            Instance::Us08 => "https://rest.iad-08.braze.com",
            Instance::Us10 => "https://rest.us-10.braze.com",
            Instance::Eu01 => "https://rest.fra-01.braze.eu",
            Instance::Eu02 => "https://rest.fra-02.braze.eu",
            Instance::Au01 => "https://rest.au-01.braze.com",
            Instance::Jp01 => "https://rest.jp-01.braze.com",
            Instance::Id01 => "https://rest.id-01.braze.com",
            Instance::Kr01 => "https://rest.kr-01.braze.com",
        }
    }
}

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Instance {
    type Err = UnknownInstance;

    /// Parses an instance name ignoring ASCII case, with or without the
    /// hyphen (`US-03`, `us-03`, `us03`, `us_03`), or its REST endpoint as
    /// the dashboard shows it (`rest.iad-03.braze.com`, with or without
    /// `https://`).
    fn from_str(text: &str) -> Result<Instance, UnknownInstance> {
        let trimmed = text.trim();
        let host = trimmed
            .strip_prefix("https://")
            .unwrap_or(trimmed)
            .trim_end_matches('/');
        let key: String = trimmed
            .chars()
            .filter(|&c| c != '-' && c != '_')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        Instance::ALL
            .into_iter()
            .find(|instance| {
                instance.name().replace('-', "") == key
                    || instance.rest_url()["https://".len()..].eq_ignore_ascii_case(host)
            })
            .ok_or_else(|| UnknownInstance(text.to_owned()))
    }
}

/// A name that is not a Braze instance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown Braze instance {0:?}: expected one of {names}", names = instance_names())]
pub struct UnknownInstance(String);

/// `US-01, US-02, …`, for [`UnknownInstance`]'s message.
fn instance_names() -> String {
    Instance::ALL.map(Instance::name).join(", ")
}
