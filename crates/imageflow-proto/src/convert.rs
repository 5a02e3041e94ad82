//! The one mapping from the pipeline's typed values to the wire enums, for
//! every client (backend-api, imageflowctl). Each `match` names every value,
//! so a value added to the pipeline's enums does not compile until it has its
//! wire value, instead of being sent as some default.

use imageflow_pipeline::registry;

use crate::v1;

impl From<registry::ResizeQuality> for v1::ResizeQuality {
    fn from(quality: registry::ResizeQuality) -> Self {
        match quality {
            registry::ResizeQuality::Fast => Self::Fast,
            registry::ResizeQuality::Good => Self::Good,
            registry::ResizeQuality::Best => Self::Best,
        }
    }
}

impl From<registry::FilterType> for v1::FilterType {
    fn from(filter: registry::FilterType) -> Self {
        match filter {
            registry::FilterType::Blur => Self::Blur,
            registry::FilterType::Sharpen => Self::Sharpen,
            registry::FilterType::Brightness => Self::Brightness,
            registry::FilterType::Contrast => Self::Contrast,
            registry::FilterType::Saturation => Self::Saturation,
            registry::FilterType::Gaussian => Self::Gaussian,
            registry::FilterType::Grayscale => Self::Grayscale,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// Each value lands on the wire value of the same name (the proto names
    /// are the upper-case wire names behind the enum's prefix).
    #[test]
    fn each_value_maps_to_its_namesake() {
        for quality in registry::ResizeQuality::ALL {
            assert_eq!(
                v1::ResizeQuality::from(*quality).as_str_name(),
                format!("RESIZE_QUALITY_{}", quality.as_str().to_ascii_uppercase())
            );
        }
        for filter in registry::FilterType::ALL {
            assert_eq!(
                v1::FilterType::from(*filter).as_str_name(),
                format!("FILTER_TYPE_{}", filter.as_str().to_ascii_uppercase())
            );
        }
        assert_eq!(
            v1::ResizeQuality::from(registry::ResizeQuality::Good) as i32,
            2
        );
        assert_eq!(
            v1::FilterType::from(registry::FilterType::Gaussian) as i32,
            6
        );
    }

    /// The other direction of exhaustiveness: every wire value but UNSPECIFIED
    /// is reachable, so a value added to the proto without a pipeline name
    /// fails here.
    #[test]
    fn every_wire_value_is_reachable() {
        let qualities: HashSet<v1::ResizeQuality> = registry::ResizeQuality::ALL
            .iter()
            .map(|q| (*q).into())
            .collect();
        let filters: HashSet<v1::FilterType> = registry::FilterType::ALL
            .iter()
            .map(|f| (*f).into())
            .collect();
        for n in 1..64 {
            if let Ok(quality) = v1::ResizeQuality::try_from(n) {
                assert!(
                    qualities.contains(&quality),
                    "{quality:?} has no pipeline name"
                );
            }
            if let Ok(filter) = v1::FilterType::try_from(n) {
                assert!(filters.contains(&filter), "{filter:?} has no pipeline name");
            }
        }
        assert!(!qualities.contains(&v1::ResizeQuality::Unspecified));
        assert!(!filters.contains(&v1::FilterType::Unspecified));
        assert_eq!(qualities.len(), registry::ResizeQuality::ALL.len());
        assert_eq!(filters.len(), registry::FilterType::ALL.len());
    }
}
