//! The words the generator builds values from: campaign, canvas and step
//! names (with accents and emoji), people, places, devices, message texts.
//!
//! Picked to exercise what a real stream holds: UTF-8 of several scripts,
//! an escaped quote and a newline, long user agents, short enum-like words.

pub(super) const CAMPAIGN_NAMES: &[&str] = &[
    "Winter Sale 2024 – Last Chance ❄️",
    "Welcome Series #1",
    "Rappel panier abandonné 🛒",
    "Black Friday Early Access",
    "Re-engagement: We miss you 💌",
    "Wöchentlicher Newsletter – Neuigkeiten für Sie",
    "Promo été ☀️ -30 %",
    "Onboarding Day 3 – Complete your profile",
    "Price Drop Alert",
    "Cumpleaños 🎂 Descuento especial",
    "App Update 5.2 — What's new",
    "Flash Sale: 24h only ⚡",
];
pub(super) const CANVAS_NAMES: &[&str] = &[
    "Onboarding Journey v3",
    "Abandoned Cart Recovery 🛒",
    "Parcours de bienvenue",
    "Lapsed User Win-back",
    "Post-purchase Cross-sell",
    "Trial → Paid Conversion",
    "Loyalty Tier Upgrade ⭐",
    "Reactivación de usuarios inactivos",
];
pub(super) const STEP_NAMES: &[&str] = &[
    "Email 1 – Welcome",
    "Push: Reminder",
    "Wait 2 days",
    "Decision split: opened?",
    "In-app: Survey 📝",
    "SMS follow-up",
    "Audience Paths",
    "Message: Dernière chance",
];
pub(super) const VARIATION_NAMES: &[&str] = &[
    "Variant A",
    "Variant B – emoji subject 🎉",
    "Control",
    "Variante française",
    "Variant C (short copy)",
];
pub(super) const CUSTOM_EVENT_NAMES: &[&str] = &[
    "Added to Cart",
    "Viewed Product",
    "Completed Checkout",
    "Search Performed",
    "Started Free Trial",
    "Café commandé ☕",
    "Watched Video",
    "Shared Article",
    "Level Completed 🏆",
    "Profil mis à jour",
    "Wishlist Item Added",
    "Subscription Renewed",
];
pub(super) const FIRST_NAMES: &[&str] = &[
    "Zoë", "José", "Ana", "Łukasz", "Søren", "Chloé", "Émile", "Ngozi", "Hiroshi", "Maëlle",
    "Oliver", "Priya",
];
pub(super) const LAST_NAMES: &[&str] = &[
    "Müller",
    "García",
    "Nguyễn",
    "O'Brien",
    "Dubois",
    "Kowalski",
    "Smith",
    "Jäger",
    "Rossi",
    "Andersson",
];
pub(super) const EMAIL_DOMAINS: &[&str] = &[
    "gmail.com",
    "yahoo.fr",
    "outlook.com",
    "icloud.com",
    "gmx.de",
    "example.org",
];
pub(super) const TIMEZONES: &[&str] = &[
    "America/New_York",
    "Europe/Paris",
    "Europe/Berlin",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "America/Sao_Paulo",
    "Europe/London",
    "Australia/Sydney",
    "Africa/Lagos",
    "Asia/Kolkata",
];
pub(super) const TEXTS: &[&str] = &[
    "Votre commande a été expédiée 📦 — suivez-la dans l'application.",
    "¡Hola! Tu carrito te espera 🛒 y tiene un 10 % de descuento.",
    "Grüße aus München! Ihr Rabattcode gilt bis Sonntag.",
    "Reminder: your appointment is tomorrow at 10:30 ⏰",
    "Mailbox full: 552 5.2.2 recipient over quota",
    "Merci d'avoir choisi notre café ☕ — à très bientôt !",
    "Your \"Premium\" trial ends in 3 days.\nUpgrade now to keep your playlists 🎶",
    "Oferta exclusiva só hoje: frete grátis 🚚",
    "Rate limit exceeded; retrying after back-off",
    "お得なセール開催中！今すぐチェック 🎉",
];
pub(super) const SHOP_HOSTS: &[&str] = &[
    "https://shop.example.com",
    "https://www.boutique-exemple.fr",
    "https://m.example.de",
    "https://app.example.io",
];
pub(super) const URL_PATHS: &[&str] = &[
    "/sale/winter",
    "/p/chaussures-randonnée-42",
    "/cart",
    "/account/settings",
    "/blog/10-idées-cadeaux",
    "/checkout/confirm",
];
pub(super) const PRODUCT_CATEGORIES: &[&str] = &[
    "Chaussures",
    "Electronics",
    "Küche & Haushalt",
    "Books",
    "Beauté",
    "Outdoor",
];

/// One device type: its platform, models, OS versions and user agent.
pub(super) struct Device {
    pub(super) platform: &'static str,
    pub(super) models: &'static [&'static str],
    pub(super) os_versions: &'static [&'static str],
    pub(super) sdk_versions: &'static [&'static str],
    pub(super) ad_id_type: &'static str,
    pub(super) browser: &'static str,
    pub(super) user_agent: &'static str,
    pub(super) device_class: &'static str,
}

pub(super) const DEVICES: &[Device] = &[
    Device {
        platform: "ios",
        models: &["iPhone15,2", "iPhone14,5", "iPhone16,1", "iPad13,4"],
        os_versions: &["iOS 17.4.1", "iOS 18.1", "iOS 16.7.8", "iPadOS 17.5"],
        sdk_versions: &["9.0.0", "8.4.0", "10.1.0"],
        ad_id_type: "ios_idfa",
        browser: "Mobile Safari",
        user_agent: "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
        device_class: "mobile",
    },
    Device {
        platform: "android",
        models: &["Pixel 8", "SM-S918B", "moto g54 5G", "2201116SG"],
        os_versions: &["Android 14", "Android 13", "Android 12"],
        sdk_versions: &["30.1.1", "29.0.0", "31.0.0"],
        ad_id_type: "google_ad_id",
        browser: "Chrome Mobile",
        user_agent: "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36",
        device_class: "mobile",
    },
    Device {
        platform: "web",
        models: &["Chrome", "Firefox", "Safari"],
        os_versions: &["Mac OS X 14.4", "Windows 11", "Linux"],
        sdk_versions: &["5.3.0", "5.1.1"],
        ad_id_type: "windows_ad_id",
        browser: "Chrome",
        user_agent: "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        device_class: "desktop",
    },
];
