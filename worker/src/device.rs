//! Devices and slots: a worker runs one trial per slot, one slot per device.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    /// CPU slots are numbered only to tell them apart.
    Cpu(usize),
    Cuda(usize),
}

impl Device {
    pub fn to_tch(self) -> tch::Device {
        match self {
            Device::Cpu(_) => tch::Device::Cpu,
            Device::Cuda(i) => tch::Device::Cuda(i),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu(i) => write!(f, "cpu:{i}"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// The `--devices` flag: `auto`, `cpu`, `cpu:N` (N CPU slots) or a list of
/// CUDA devices such as `cuda:0,cuda:1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    Auto,
    Cpu(usize),
    Cuda(Vec<usize>),
}

impl FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "auto" {
            return Ok(DeviceSpec::Auto);
        }
        if s == "cpu" {
            return Ok(DeviceSpec::Cpu(1));
        }
        if let Some(n) = s.strip_prefix("cpu:") {
            return match n.parse::<usize>() {
                Ok(n) if (1..=256).contains(&n) => Ok(DeviceSpec::Cpu(n)),
                _ => Err(format!(
                    "invalid --devices `{s}`: cpu:N needs N between 1 and 256"
                )),
            };
        }
        let mut ids = Vec::new();
        for part in s.split(',') {
            let id = part
                .trim()
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| {
                    format!(
                        "invalid --devices `{s}`: expected auto, cpu, cpu:N or cuda:0,cuda:1,..."
                    )
                })?;
            if ids.contains(&id) {
                return Err(format!(
                    "invalid --devices `{s}`: cuda:{id} is listed twice"
                ));
            }
            ids.push(id);
        }
        Ok(DeviceSpec::Cuda(ids))
    }
}

impl DeviceSpec {
    /// The slots this spec gives on this machine. `auto` is one slot per
    /// visible CUDA device, else one CPU slot.
    pub fn resolve(&self) -> Result<Vec<Device>, String> {
        match self {
            DeviceSpec::Auto => {
                let n = tch::Cuda::device_count().max(0) as usize;
                if n > 0 {
                    Ok((0..n).map(Device::Cuda).collect())
                } else {
                    Ok(vec![Device::Cpu(0)])
                }
            }
            DeviceSpec::Cpu(n) => Ok((0..*n).map(Device::Cpu).collect()),
            DeviceSpec::Cuda(ids) => {
                let n = tch::Cuda::device_count().max(0) as usize;
                for id in ids {
                    if *id >= n {
                        return Err(format!(
                            "cuda:{id} is not available: this machine shows {n} CUDA device(s)"
                        ));
                    }
                }
                Ok(ids.iter().copied().map(Device::Cuda).collect())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_specs() {
        assert_eq!("auto".parse::<DeviceSpec>(), Ok(DeviceSpec::Auto));
        assert_eq!("cpu".parse::<DeviceSpec>(), Ok(DeviceSpec::Cpu(1)));
        assert_eq!("cpu:2".parse::<DeviceSpec>(), Ok(DeviceSpec::Cpu(2)));
        assert_eq!(
            "cuda:0,cuda:1".parse::<DeviceSpec>(),
            Ok(DeviceSpec::Cuda(vec![0, 1]))
        );
        assert!("cpu:0".parse::<DeviceSpec>().is_err());
        assert!("gpu".parse::<DeviceSpec>().is_err());
        assert!("cuda:0,cuda:0".parse::<DeviceSpec>().is_err());
    }

    #[test]
    fn cpu_slots_resolve_without_cuda() {
        let slots = DeviceSpec::Cpu(2)
            .resolve()
            .expect("cpu slots need no device");
        assert_eq!(slots, vec![Device::Cpu(0), Device::Cpu(1)]);
    }
}
