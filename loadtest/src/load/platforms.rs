//! The platform mix of the load's devices (`--platforms ios=45,android=45,web=10`): each device
//! is an iPhone, an Android phone or a browser by a pure function of (prefix, user, device), so
//! a later run names the same devices; browsers get their subscription from the Web Push
//! simulator.

use std::fmt;
use std::sync::Arc;

use anyhow::bail;
use serde_json::Value;

/// Weights of the device platforms, out of their sum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Platforms {
    pub ios: u32,
    pub android: u32,
    pub web: u32,
}

impl Default for Platforms {
    fn default() -> Self {
        Platforms {
            ios: 100,
            android: 0,
            web: 0,
        }
    }
}

/// A device's platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    Ios,
    Android,
    Web,
}

impl Platforms {
    /// `ios=45,android=45,web=10` (any subset, weights summing to more than 0).
    pub fn parse(text: &str) -> anyhow::Result<Platforms> {
        let mut p = Platforms {
            ios: 0,
            android: 0,
            web: 0,
        };
        for part in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let Some((name, weight)) = part.split_once('=') else {
                bail!("`{part}`: expected platform=weight");
            };
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("`{part}`: the weight is not a number"))?;
            match name.trim() {
                "ios" => p.ios = weight,
                "android" => p.android = weight,
                "web" => p.web = weight,
                other => bail!("`{other}` is not a platform (ios, android, web)"),
            }
        }
        if p.ios + p.android + p.web == 0 {
            bail!("the platform weights add up to 0");
        }
        Ok(p)
    }

    /// The platform of the device whose hash is `h`.
    pub fn pick(&self, h: u64) -> Platform {
        let total = u64::from(self.ios + self.android + self.web).max(1);
        let at = h % total;
        if at < u64::from(self.ios) {
            Platform::Ios
        } else if at < u64::from(self.ios + self.android) {
            Platform::Android
        } else {
            Platform::Web
        }
    }

    /// The share of devices that are browsers (0 to 1).
    pub fn web_share(&self) -> f64 {
        let total = f64::from(self.ios + self.android + self.web);
        if total == 0.0 {
            0.0
        } else {
            f64::from(self.web) / total
        }
    }

    pub fn only_ios(&self) -> bool {
        self.android == 0 && self.web == 0
    }
}

impl fmt::Display for Platforms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ios={},android={},web={}",
            self.ios, self.android, self.web
        )
    }
}

/// Makes a browser subscription (`PushSubscription.toJSON()`) for a web device.
#[derive(Clone)]
pub struct Subscriber(pub Arc<dyn Fn() -> anyhow::Result<Value> + Send + Sync>);

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Subscriber")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_parse_and_split_devices() {
        let p = Platforms::parse("ios=45,android=45,web=10").unwrap();
        assert_eq!(
            p,
            Platforms {
                ios: 45,
                android: 45,
                web: 10
            }
        );
        let counts = (0..10_000u64).fold([0u32; 3], |mut c, h| {
            c[p.pick(h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 7) as usize] += 1;
            c
        });
        assert!(
            (4000..5000).contains(&counts[0])
                && (4000..5000).contains(&counts[1])
                && (700..1300).contains(&counts[2]),
            "{counts:?}"
        );
        assert!(Platforms::parse("ios=0").is_err());
        assert!(Platforms::parse("pager=1").is_err());
        assert!(Platforms::parse("ios").is_err());
        assert_eq!(
            Platforms::parse("android=1").unwrap().pick(7),
            Platform::Android
        );
    }
}
