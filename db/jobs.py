"""Retraining jobs' rows: which job runs, which ran. Starting and watching them is app.services.jobs'."""

from __future__ import annotations

from sqlmodel import Session, col, select

from db.models import TrainingJob


def running_jobs(session: Session) -> list[TrainingJob]:
    """Jobs recorded as running (their process may have ended since; the Runner settles them)."""
    return list(session.exec(select(TrainingJob).where(TrainingJob.status == "running")))


def recent_jobs(session: Session, limit: int = 20) -> list[TrainingJob]:
    """The latest ``limit`` jobs, newest first."""
    return list(session.exec(select(TrainingJob).order_by(col(TrainingJob.id).desc()).limit(limit)))


def job_version_names(session: Session) -> list[str]:
    """Every version name a job has claimed (a running job's name is not registered yet)."""
    return list(session.exec(select(TrainingJob.version_name)))
