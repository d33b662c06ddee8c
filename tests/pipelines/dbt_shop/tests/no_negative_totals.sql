-- A singular test: any row returned is a failure.
select * from {{ ref('customer_totals') }} where total < 0
