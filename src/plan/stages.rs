//! The stages: Source → CI (parallel) → Build (in order) → one Deploy stage per environment.

use super::{ACTIONS_PER_STAGE, ActionKind, ActionPlan, GatePlan, StagePlan};
use crate::model::Model;
use crate::org::Stage;

/// The pipeline's stages and their actions, in order.
pub(super) fn stages(model: &Model, gates: &[GatePlan]) -> Vec<StagePlan> {
    let mut stages = vec![StagePlan {
        name: "Source".to_owned(),
        actions: vec![ActionPlan {
            name: "Source".to_owned(),
            kind: ActionKind::Source,
            run_order: 1,
            gate: None,
            environment: None,
        }],
    }];
    // CodePipeline allows at most 50 actions per stage: more gates than that are split over
    // consecutive stages (`CI-1`, `CI-2`, ...), which keeps their order and parallelism.
    for (stage, stage_name) in [(Stage::Ci, "CI"), (Stage::Build, "Build")] {
        let stage_gates: Vec<&GatePlan> = gates.iter().filter(|g| g.stage == stage).collect();
        let chunks: Vec<&[&GatePlan]> = stage_gates.chunks(ACTIONS_PER_STAGE).collect();
        for (c, chunk) in chunks.iter().enumerate() {
            let actions = chunk
                .iter()
                .enumerate()
                .map(|(i, g)| ActionPlan {
                    name: g.name.clone(),
                    kind: ActionKind::Gate,
                    run_order: if stage == Stage::Ci { 1 } else { i as u32 + 1 },
                    gate: Some(g.name.clone()),
                    environment: None,
                })
                .collect();
            stages.push(StagePlan {
                name: if chunks.len() == 1 {
                    stage_name.to_owned()
                } else {
                    format!("{stage_name}-{}", c + 1)
                },
                actions,
            });
        }
    }
    // Each environment: create the change set, wait for the approval (when required) so that
    // approvers review the exact change, then execute it.
    for e in &model.environments {
        let action = |name: &str, kind, run_order| ActionPlan {
            name: name.to_owned(),
            kind,
            run_order,
            gate: None,
            environment: Some(e.name.clone()),
        };
        let mut actions = vec![action("CreateChangeSet", ActionKind::CreateChangeSet, 1)];
        if e.approval.value {
            actions.push(action("Approve", ActionKind::Approval, 2));
        }
        let next = actions.len() as u32 + 1;
        actions.push(action(
            "ExecuteChangeSet",
            ActionKind::ExecuteChangeSet,
            next,
        ));
        stages.push(StagePlan {
            name: format!("Deploy-{}", e.name),
            actions,
        });
    }
    stages
}
