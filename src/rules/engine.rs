pub struct RuleEngine;
pub struct RuleStatus;
