//! Tenants: the city's public space and each partner organisation.

use super::{Access, TenantName};

/// A tenant as the control plane sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    /// The tenant's name, the first part of every room URL.
    pub name: TenantName,
    /// What people see as the space's title.
    pub display_name: String,
    /// How much of the platform the tenant may use.
    pub limits: TenantLimits,
    /// What the tenant allows.
    pub policy: TenantPolicy,
    /// A suspended tenant admits nobody.
    pub suspended: bool,
    /// The MediaPools whose nodes may host the tenant's rooms; empty for any open pool.
    pub media_pools: Vec<String>,
    /// How the tenant's pages look.
    pub branding: Branding,
}

/// How a tenant's pages look: a title, an accent colour and a logo. The client keeps the
/// colour's contrast accessible whatever it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Branding {
    /// The title in the bar, instead of the display name.
    pub title: Option<String>,
    /// The accent colour, `#rrggbb`.
    pub primary_color: Option<String>,
    /// The logo, a `data:image/...` URL.
    pub logo: Option<String>,
}

/// How much of the platform a tenant may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TenantLimits {
    /// Rooms that may exist at once.
    pub max_rooms: u32,
    /// Participants in one room, unless the room sets a lower limit.
    pub max_participants_per_room: u32,
    /// Participants in all the tenant's rooms together.
    pub max_participants: u32,
}

/// What a tenant allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TenantPolicy {
    /// Opening a new room name creates the room.
    pub adhoc_rooms: bool,
    /// How rooms are entered unless they say otherwise.
    pub default_access: Access,
    /// In an ad-hoc room, the first person in moderates.
    pub first_joiner_moderates: bool,
}

impl Tenant {
    /// The city's public space: anyone may open a room by choosing a name.
    pub fn public() -> Self {
        Self {
            name: TenantName::new("public").expect("'public' is a valid DNS label"),
            display_name: "Treffpunkt".to_owned(),
            limits: TenantLimits {
                max_rooms: 500,
                max_participants_per_room: 20,
                max_participants: 2000,
            },
            policy: TenantPolicy {
                adhoc_rooms: true,
                default_access: Access::Open,
                first_joiner_moderates: true,
            },
            suspended: false,
            media_pools: Vec::new(),
            branding: Branding::default(),
        }
    }
}
