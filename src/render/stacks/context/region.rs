//! The context of `stacks/region.yml.tera`: the artifact bucket and key of one extra region, in
//! the tooling account.

use serde::Serialize;

use super::{Reader, StackHeader, Tag, header, readers_in, tags};
use crate::error::Result;
use crate::names::{BucketName, RoleName};
use crate::plan::Plan;
use crate::render::templates::Templates;

/// Everything `stacks/region.yml.tera` sees.
#[derive(Debug, Serialize)]
pub struct RegionStackContext<'a> {
    /// Description and metadata.
    pub header: StackHeader<'a>,
    /// Tags.
    pub tags: Vec<Tag<'a>>,
    /// The CodePipeline name; validated.
    pub pipeline: &'a str,
    /// Region; validated.
    pub region: &'a str,
    /// Bucket; validated.
    pub bucket: &'a BucketName,
    /// Key alias (the same in every region); validated.
    pub key_alias: &'a str,
    /// The pipeline's service role; validated.
    pub pipeline_role: &'a RoleName,
    /// Deploy roles of the environments in this region.
    pub readers: Vec<Reader<'a>>,
    /// Their accounts; validated.
    pub reader_accounts: Vec<&'a str>,
}

/// The context of `stacks/region.yml.tera` for one extra region.
pub fn region_context<'a>(
    plan: &'a Plan,
    templates: &'a Templates,
    region: &'a crate::names::RegionNames,
) -> Result<RegionStackContext<'a>> {
    let (readers, reader_accounts) = readers_in(plan, &region.region)?;
    Ok(RegionStackContext {
        header: header(
            plan,
            templates,
            format!(
                "artifact store of `{}` (team `{}`) in {}",
                plan.pipeline.name, plan.pipeline.team, region.region
            ),
        ),
        tags: tags(plan),
        pipeline: plan.names.pipeline.as_str(),
        region: &region.region,
        bucket: &region.bucket,
        key_alias: plan.names.key_alias.as_str(),
        pipeline_role: &plan.names.pipeline_role,
        readers,
        reader_accounts,
    })
}
