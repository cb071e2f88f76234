//! Maps one decoded instruction to the canonical features it needs, each with its class.

use super::{table, Class, Feature, TABLE};
use iced_x86::{Code, Instruction, Mnemonic};

/// One feature an instruction uses, and how the instruction behaves without it.
#[derive(Debug, Clone, Copy)]
pub struct InsnFeature {
    pub id: super::FeatureId,
    pub feature: &'static Feature,
    pub class: Class,
}

/// Features an instruction uses. Features without a CPUID bit that every x86-64 CPU
/// has (8086…386, X64 opcodes, CPUID itself) are not returned.
pub fn classify(insn: &Instruction) -> impl Iterator<Item = InsnFeature> + '_ {
    insn.cpuid_features().iter().filter_map(move |&cf| {
        let id = table::iced_index()[cf as usize]?;
        let feature = &TABLE[id as usize];
        Some(InsnFeature { id, feature, class: class_of(insn, feature) })
    })
}

fn class_of(insn: &Instruction, feature: &'static Feature) -> Class {
    match insn.mnemonic() {
        // TZCNT (F3 0F BC) executes as BSF without BMI1: different result for zero input.
        Mnemonic::Tzcnt => Class::Silent,
        // RDSSP and INCSSP sit in the NOP space: no-ops without CET shadow stacks.
        Mnemonic::Rdsspd | Mnemonic::Rdsspq | Mnemonic::Incsspd | Mnemonic::Incsspq => Class::Hint,
        _ if insn.code() == Code::Nop_rm16 || insn.code() == Code::Nop_rm32 || insn.code() == Code::Nop_rm64 => {
            Class::Hint
        }
        _ => feature.class,
    }
}
