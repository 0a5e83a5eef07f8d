"""Reports stage: business summaries as warehouse views, their assets and the HTML dashboard."""
