"""Budget checks, run by the runner after every stage."""

from compress.budgets.checks import RULES, BudgetCheck, check_budgets

__all__ = ["RULES", "BudgetCheck", "check_budgets"]
