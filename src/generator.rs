//! Synthetic participant lists with planted fraud rings (`riskbatch gen`).
//!
//! About 3 % of rows belong to rings: groups of 5–40 accounts that share a
//! device, an IP or a Wi-Fi network known to the simulated platform (see
//! `sim::risk::ring_flagged`), so the simulator scores them high and the
//! summary's clusters find them. About 1 % of rows repeat an earlier
//! participant (an identical request) and 1 in 2000 has no openid.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow_array::builder::StringBuilder;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::sim::risk::ring_flagged;

pub const COLUMNS: [&str; 8] = [
    "openid",
    "phone",
    "cert_id",
    "client_ip",
    "device_id",
    "wifi_bssid",
    "mch_code",
    "city",
];

const CITIES: [&str; 8] = [
    "北京", "上海", "广州", "深圳", "杭州", "成都", "武汉", "西安",
];
const BATCH: usize = 65_536;

struct Ring {
    left: u32,
    device: Option<String>,
    ip: Option<String>,
    wifi: Option<String>,
}

struct Generator {
    rng: fastrand::Rng,
    rings: Vec<Ring>,
    recent: Vec<[Option<String>; 8]>,
}

impl Generator {
    fn openid(&mut self) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut id = String::with_capacity(28);
        id.push('o');
        for _ in 0..27 {
            id.push(ALPHABET[self.rng.usize(..ALPHABET.len())] as char);
        }
        id
    }

    fn ip(&mut self) -> String {
        format!(
            "{}.{}.{}.{}",
            self.rng.u8(1..224),
            self.rng.u8(..),
            self.rng.u8(..),
            self.rng.u8(1..255)
        )
    }

    fn device(&mut self) -> String {
        if self.rng.bool() {
            format!("86{:013}", self.rng.u64(..10_000_000_000_000))
        } else {
            let v = self.rng.u128(..);
            format!(
                "{:08X}-{:04X}-{:04X}-{:04X}-{:012X}",
                (v >> 96) as u32,
                (v >> 80) as u16,
                (v >> 64) as u16,
                (v >> 48) as u16,
                v as u64 & 0xFFFF_FFFF_FFFF
            )
        }
    }

    fn wifi(&mut self) -> String {
        let b: [u8; 6] = std::array::from_fn(|_| self.rng.u8(..));
        format!(
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }

    /// A value the simulated platform knows as a farm's.
    fn flagged(&mut self, make: fn(&mut Generator) -> String) -> String {
        loop {
            let value = make(self);
            if ring_flagged(&value) {
                return value;
            }
        }
    }

    fn new_ring(&mut self) -> Ring {
        let shares = self.rng.u8(1..8);
        Ring {
            left: self.rng.u32(5..=40),
            device: (shares & 1 != 0).then(|| self.flagged(Generator::device)),
            ip: (shares & 2 != 0).then(|| self.flagged(Generator::ip)),
            wifi: (shares & 4 != 0).then(|| self.flagged(Generator::wifi)),
        }
    }

    fn row(&mut self) -> [Option<String>; 8] {
        if !self.recent.is_empty() && self.rng.u32(..100) == 0 {
            return self.recent[self.rng.usize(..self.recent.len())].clone();
        }
        let mut row: [Option<String>; 8] = [
            Some(self.openid()),
            (self.rng.u32(..10) != 0).then(|| {
                format!(
                    "1{}{:09}",
                    self.rng.u8(3..10),
                    self.rng.u32(..1_000_000_000)
                )
            }),
            (self.rng.u32(..10) < 6).then(|| {
                format!(
                    "{:06}{}{:02}{:02}{:03}{}",
                    self.rng.u32(110_000..660_000),
                    self.rng.u32(1960..2006),
                    self.rng.u32(1..13),
                    self.rng.u32(1..29),
                    self.rng.u32(..1000),
                    if self.rng.u32(..11) == 10 {
                        'X'
                    } else {
                        char::from(b'0' + self.rng.u8(..10))
                    }
                )
            }),
            (self.rng.u32(..20) != 0).then(|| self.ip()),
            (self.rng.u32(..10) != 0).then(|| self.device()),
            (self.rng.u32(..10) < 7).then(|| self.wifi()),
            Some(format!("mch{:04}", 1000 + self.rng.u32(..5))),
            Some(CITIES[self.rng.usize(..CITIES.len())].to_string()),
        ];
        if self.rng.u32(..100) < 3 {
            if self.rings.len() < 20 {
                let ring = self.new_ring();
                self.rings.push(ring);
            }
            let i = self.rng.usize(..self.rings.len());
            let ring = &mut self.rings[i];
            if let Some(d) = &ring.device {
                row[4] = Some(d.clone());
            }
            if let Some(ip) = &ring.ip {
                row[3] = Some(ip.clone());
            }
            if let Some(w) = &ring.wifi {
                row[5] = Some(w.clone());
            }
            ring.left -= 1;
            if ring.left == 0 {
                self.rings.swap_remove(i);
            }
        }
        if self.rng.u32(..2000) == 0 {
            row[0] = None;
        }
        if self.recent.len() < 1000 {
            self.recent.push(row.clone());
        } else {
            let slot = self.rng.usize(..self.recent.len());
            self.recent[slot] = row.clone();
        }
        row
    }
}

/// Writes `rows` synthetic participants to `out` (.csv or .parquet).
pub fn generate(rows: u64, out: &Path, seed: u64) -> Result<()> {
    let name = out.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let mut generator = Generator {
        rng: fastrand::Rng::with_seed(seed),
        rings: Vec::new(),
        recent: Vec::new(),
    };
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    if name.ends_with(".csv") {
        let mut writer = csv::Writer::from_writer(BufWriter::with_capacity(1 << 18, file));
        writer.write_record(COLUMNS)?;
        for _ in 0..rows {
            let row = generator.row();
            writer.write_record(row.iter().map(|v| v.as_deref().unwrap_or("")))?;
        }
        writer.flush()?;
    } else if name.ends_with(".parquet") {
        let schema = Arc::new(Schema::new(
            COLUMNS
                .iter()
                .map(|c| Field::new(*c, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        ));
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
            .build();
        let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(props))?;
        let mut left = rows;
        while left > 0 {
            let n = left.min(BATCH as u64) as usize;
            let mut builders: Vec<StringBuilder> =
                (0..COLUMNS.len()).map(|_| StringBuilder::new()).collect();
            for _ in 0..n {
                for (builder, value) in builders.iter_mut().zip(generator.row()) {
                    builder.append_option(value);
                }
            }
            let columns: Vec<ArrayRef> = builders
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef)
                .collect();
            writer.write(&RecordBatch::try_new(schema.clone(), columns)?)?;
            left -= n as u64;
        }
        writer.close()?;
    } else {
        bail!(crate::exit::UsageError(format!(
            "--out {}: the file name must end in .csv or .parquet",
            out.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_file_and_rings_are_planted() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.csv");
        let b = dir.path().join("b.csv");
        generate(3000, &a, 7).unwrap();
        generate(3000, &b, 7).unwrap();
        let text = std::fs::read_to_string(&a).unwrap();
        assert_eq!(text, std::fs::read_to_string(&b).unwrap());
        assert_eq!(text.lines().count(), 3001);
        let mut per_device = std::collections::HashMap::<&str, u32>::new();
        for device in text
            .lines()
            .skip(1)
            .filter_map(|l| l.split(',').nth(4))
            .filter(|d| !d.is_empty())
        {
            *per_device.entry(device).or_default() += 1;
        }
        let shared: Vec<&str> = per_device
            .iter()
            .filter(|(_, n)| **n >= 5)
            .map(|(d, _)| *d)
            .collect();
        assert!(!shared.is_empty(), "no ring shares a device");
        assert!(
            shared.iter().all(|d| ring_flagged(d)),
            "a shared device is not a farm device"
        );
    }
}
