from django.urls import path

from comparisons import views

urlpatterns = [
    path("evaluations/", views.evaluation_list, name="evaluation_list"),
    path("evaluations/<str:name>/", views.comparison_detail, name="comparison_detail"),
    path("evaluations/<str:name>/stats/", views.comparison_stats_detail, name="comparison_stats"),
    path("evaluations/<str:name>/failures/", views.comparison_failures_detail, name="comparison_failures"),
    path("evaluations/<str:name>/runs/", views.run_search, name="run_search"),
    path("evaluations/<str:name>/export/", views.comparison_export, name="comparison_export"),
    path("evaluations/<str:name>/datapoints/<str:datapoint_id>/", views.datapoint_detail, name="datapoint_detail"),
    path("evaluations/<str:name>/datapoints/<str:datapoint_id>/feedback/", views.feedback_create,
         name="feedback_create"),
    path("evaluations/<str:name>/datapoints/<str:datapoint_id>/feedback/revert/", views.feedback_revert,
         name="feedback_revert"),
    path("evaluations/<str:name>/runs/new/", views.run_create, name="run_create"),
    path("runs/<str:run_id>/", views.run_detail, name="run_detail"),
    path("runs/<str:run_id>/progress/", views.run_progress, name="run_progress"),
    path("runs/<str:run_id>/stop/", views.run_stop, name="run_stop"),
    path("runs/<str:run_id>/resume/", views.run_resume, name="run_resume"),
]
